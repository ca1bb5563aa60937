"""Which labelled images kNN, linear, few-shot, corruptions and retrieval use: the ``classify`` section of
:class:`invarlab.eval.config.EvalConfig`. ``world`` (the default) takes the world preset's ``classify_train`` /
``classify_test``; any other dataset is read from disk (:mod:`invarlab.data.classification`) and its results
go under ``<evaluation>_<dataset>`` in results.json (``knn_cifar10``, ``linear_folder``, ...)."""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass

from invarlab.config import opt

__all__ = ["CLASSIFY_DATASETS", "CLASSIFY_EVALUATIONS", "ClassifyConfig", "LinearSgdConfig", "classify_key"]

# world, then invarlab.data.classification.CLASSIFICATION_DATASETS (not imported: this module must not load
# torch, the report reads it; a test keeps the two equal).
CLASSIFY_DATASETS = ("world", "folder", "imagenet", "cifar10", "cifar100", "stl10")
CLASSIFICATION_DATASETS = CLASSIFY_DATASETS[1:]
# The evaluations that read the classify sets (their results.json key takes the dataset as a suffix).
CLASSIFY_EVALUATIONS = ("knn", "linear", "linear_sgd", "fewshot", "corruptions", "retrieval")


@dataclass
class ClassifyConfig:
    """The labelled train (bank / probe training set) and test split of the classification evaluations."""

    dataset: str = opt(
        "world",
        f"world (the world preset's classify_train / classify_test), or {', '.join(CLASSIFICATION_DATASETS)}",
    )
    root: str = opt("", "imagenet, cifar10, cifar100, stl10: the dataset's folder (docs/evaluation.md)")
    train_root: str = opt("", "folder: the labelled training folder (<class>/<image>)")
    test_root: str = opt("", "folder: the test folder, with the training folder's class names")
    val_labels: str = opt("", "imagenet: label file of a flat val folder (default: found in the root)")
    resize: int = opt(
        0,
        "folder, imagenet: shorter side before the centre crop; 0 = the image size (ImageNet's protocol: 256 for 224)",
        range=(0, 4096),
    )


@dataclass
class LinearSgdConfig:
    """The standard linear protocol's options (:mod:`invarlab.eval.linear_sgd`; defaults are MoCo's lincls)."""

    epochs: int = opt(
        100, "training epochs (MoCo: 100; a few are enough to read a trend on a CPU)", range=(1, None)
    )
    batch_size: int = opt(256, "images per SGD step", range=(1, None))
    lr: float = opt(
        30.0, "initial learning rate η (MoCo: 30 at batch 256, no weight decay)", range=(0.0, None)
    )
    momentum: float = opt(0.9, "SGD momentum μ", range=(0.0, 1.0))
    weight_decay: float = opt(0.0, "weight decay λ of the classifier", range=(0.0, None))
    schedule: str = opt("step", "step (x0.1 at each milestone) or cosine", choices=("step", "cosine"))
    milestones: list[int] = opt([60, 80], "step schedule: epochs at which the lr is multiplied by 0.1")
    scale: list[float] = opt([0.08, 1.0], "RandomResizedCrop area range of the training views")
    hflip_p: float = opt(0.5, "probability of a horizontal flip of a training view", range=(0.0, 1.0))


def classify_key(evaluation: str, dataset: str) -> str:
    """The results.json key of ``evaluation`` on ``dataset``: the name alone on the world, else
    ``<evaluation>_<dataset>``."""
    return evaluation if dataset == "world" else f"{evaluation}_{dataset}"
