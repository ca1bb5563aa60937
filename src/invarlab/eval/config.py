"""What ``invarlab eval`` measures and on which data: :class:`EvalConfig` (presets in ``configs/eval/``)."""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass, field

from invarlab.config import opt
from invarlab.eval.classify_config import ClassifyConfig, LinearSgdConfig
from invarlab.eval.dense_config import DENSE_EVALUATIONS, DenseEvalConfig
from invarlab.eval.looc_config import (
    LOOC_EVALUATIONS,
    FinegrainedConfig,
    LoocEvalConfig,
    SensitivityConfig,
)
from invarlab.eval.real_config import RealSetsConfig

__all__ = [
    "DENSE_EVALUATIONS",
    "EVALUATIONS",
    "INVARIANCE_FACTORS",
    "LOOC_EVALUATIONS",
    "OPTIONAL_EVALUATIONS",
    "PROBE_FACTORS",
    "EvalConfig",
]

EVALUATIONS = ("knn", "linear", "fewshot", "invariance", "factor_probes", "corruptions", "svm", "retrieval")
# Run only when listed: the standard linear protocol trains through the backbone for many epochs.
OPTIONAL_EVALUATIONS = ("linear_sgd",)
INVARIANCE_FACTORS = (
    "viewpoint",
    "illum_direction",
    "illum_color",
    "occlusion",
    "instance",
    "instance_viewpoint",
)
PROBE_FACTORS = (
    "azimuth",
    "elevation",
    "light_direction",
    "light_color",
    "occlusion",
    "instance",
    "category",
)


@dataclass
class KnnEvalConfig:
    """Weighted kNN (cosine, weights exp(s / T)); defaults of the MoCo CIFAR demo."""

    k: int = opt(200, "neighbours", range=(1, None))
    temperature: float = opt(0.1, "temperature T of the weights exp(s / T)", range=(1e-4, 100.0))


@dataclass
class FewShotEvalConfig:
    """n-way k-shot logistic regression over repeated trials (mean and 95% confidence interval)."""

    ways: int = opt(5, "classes per trial (an all-way setting is always added)", range=(2, None))
    shots: list[int] = opt([1, 5], "training images per class, one result per value")
    queries: int = opt(15, "test images per class and trial", range=(1, None))
    trials: int = opt(20, "trials per setting", range=(2, None))


@dataclass
class CorruptionEvalConfig:
    """ImageNet-C-style corruptions of the test images, classified by kNN against clean training features."""

    names: list[str] = opt([], "corruptions to apply (empty = all)")
    severities: list[int] = opt([1, 2, 3, 4, 5], "severities 1..5")
    max_images: int = opt(
        500, "test images corrupted (a fixed random subset when there are more)", range=(1, None)
    )


@dataclass
class SvmEvalConfig:
    """Which images the VOC07-style SVM scores: the world's scenes, or real VOC2007 (trainval -> test)."""

    dataset: str = opt("world", "world (the preset's multilabel scenes) or voc (VOC2007, PAPERS.md §2.4.1)")
    root: str = opt("", "voc: the VOC2007 folder, VOCdevkit, or the folder holding VOCdevkit")
    image_size: int = opt(
        0, "voc: centre crop side; 0 = the evaluation's image size (P2: 224)", range=(0, 1024)
    )


@dataclass
class EvalConfig:
    """Evaluations of a run's backbone (``model``) against the same architecture randomly initialised
    (``random``, the floor), on datasets of a world preset (dataset names refer to that preset) or, for the
    classification evaluations, on a dataset read from disk (``classify``)."""

    world_preset: str = opt(
        "quickstart", "world preset holding the evaluation datasets (configs/world/NAME.yaml)"
    )
    world_overrides: list[str] = opt([], "key=value overrides of the world preset")
    classify_train: str = opt("eval_train", "labelled bank / probe training set (category labels)")
    classify_test: str = opt("eval_test", "test set for kNN, linear, few-shot and corruptions")
    # kNN, linear, few-shot, corruptions, retrieval on the world (above) or on a dataset read from disk
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    linear_sgd: LinearSgdConfig = field(default_factory=LinearSgdConfig)  # the standard linear protocol
    invariance_sets: list[str] = opt(
        list(INVARIANCE_FACTORS),
        "datasets of invariance-set kinds; each gives one RIS row (named by its kind)",
    )
    probes: str = opt("probes", "dataset whose factors the factor probes decode")
    multilabel: str = opt("scenes", "scene dataset for the VOC07-style multi-label SVM (categories present)")
    svm: SvmEvalConfig = field(default_factory=SvmEvalConfig)
    evaluations: list[str] = opt(
        list(EVALUATIONS),
        f"which evaluations 'invarlab eval all' runs: {', '.join(EVALUATIONS)}; "
        f"the standard linear protocol (linear_sgd), the dense ones ({', '.join(DENSE_EVALUATIONS)}) and P3's "
        f"({', '.join(LOOC_EVALUATIONS)}) only when "
        "listed",
    )
    representations: list[str] = opt(
        ["model", "random"],
        "model (the run's backbone) and/or random (the floor); for a LooC run also z0, z_<aug>, looc++",
    )
    random_seed: int = opt(0, "seed of the randomly initialised floor network", range=(0, 2**31 - 1))
    image_size: int = opt(
        0, "side images are resized to before the network; 0 = the run's training view size"
    )
    batch_size: int = opt(256, "feature-extraction batch size", range=(1, None))
    workers: int = opt(0, "DataLoader processes decoding images for feature extraction", range=(0, 64))
    feature_dtype: str = opt(
        "float32",
        "storage of cached features: float32, or float16 (half the memory: a 1.28 M x 2048 bank is 5 GB)",
        choices=("float32", "float16"),
    )
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    seed: int = opt(0, "seed of every random choice in the evaluations (splits, trials, corruptions)")
    knn: KnnEvalConfig = field(default_factory=KnnEvalConfig)
    fewshot: FewShotEvalConfig = field(default_factory=FewShotEvalConfig)
    corruptions: CorruptionEvalConfig = field(default_factory=CorruptionEvalConfig)
    retrieval_queries: int = opt(8, "query rows of the nearest-neighbour retrieval grid", range=(1, 64))
    retrieval_neighbours: int = opt(8, "neighbours shown per query", range=(1, 32))
    real_sets: RealSetsConfig = field(default_factory=RealSetsConfig)  # invarlab eval invariance --dataset
    # segment-retrieval, label-propagation, seg-probe (--dataset world|voc|davis)
    dense: DenseEvalConfig = field(default_factory=DenseEvalConfig)
    # P3 (docs/eval_looc.md): LooC spaces as representations, sensitivity probes, fine-grained classification
    looc: LoocEvalConfig = field(default_factory=LoocEvalConfig)
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)
    finegrained: FinegrainedConfig = field(default_factory=FinegrainedConfig)
