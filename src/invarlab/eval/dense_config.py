"""Options of the dense evaluations (``invarlab eval segment-retrieval | label-propagation | seg-probe``), the
``dense`` section of :class:`invarlab.eval.config.EvalConfig`. Defaults follow PAPERS.md §2.4.3 / §2.4.4;
choices the papers leave open are marked in docs/eval_dense.md."""

from __future__ import annotations

from dataclasses import dataclass, field

from invarlab.config import opt

__all__ = [
    "DENSE_DATASETS",
    "DENSE_EVALUATIONS",
    "DenseEvalConfig",
    "PropagationConfig",
    "RetrievalConfig",
    "SegProbeConfig",
]

DENSE_EVALUATIONS = ("segment_retrieval", "label_propagation", "seg_probe")
DENSE_DATASETS = ("world", "voc", "davis")
_LAYERS = ("layer2", "layer3", "layer4")
_STRIDE = ("stride", "dilation", "none")


@dataclass
class RetrievalConfig:
    """Semantic segment retrieval (MaskContrast's protocol, PAPERS.md §2.4.3)."""

    masks: str = opt(
        "auto",
        "auto: gt_instances on the world (scenes hold 2-6 categories), gt on VOC (MaskContrast's protocol); "
        "gt: one mask per image, every labelled object (ground-truth saliency); gt_instances: one per object; "
        "saliency: the boundary-prior saliency of the features themselves (no labels)",
        choices=("auto", "gt", "gt_instances", "saliency"),
    )
    threshold: float = opt(0.5, "mask pixels are those with s(x) > threshold", range=(0.0, 1.0))
    layer: str = opt("layer4", "dense stage whose map is pooled", choices=_LAYERS)
    stride_change: str = opt(
        "dilation", "layer3/4 strides: dilation, stride (stride 1, no dilation) or none", choices=_STRIDE
    )


@dataclass
class PropagationConfig:
    """Label propagation (videowalk's test, PAPERS.md §2.4.4; defaults of P2's README command)."""

    topk: int = opt(10, "context positions each position takes its label from", range=(1, None))
    context: int = opt(20, "latest frames kept as context, besides the first frame", range=(1, None))
    radius: float = opt(12.0, "neighbourhood radius in feature-map cells", range=(0.0, None))
    temperature: float = opt(0.05, "softmax temperature of the top-k affinities", range=(1e-4, 10.0))
    layer: str = opt("layer3", "dense stage (videowalk removes layer4)", choices=_LAYERS)
    stride_change: str = opt(
        "stride", "layer3/4 strides: stride (videowalk: stride 1), dilation or none", choices=_STRIDE
    )
    bound_th: float = opt(
        0.008, "F's boundary tolerance: fraction of the image diagonal (>= 1: pixels)", range=(0.0, None)
    )
    tile: int = opt(16, "query tile side (memory only; results do not depend on it)", range=(1, None))


@dataclass
class SegProbeConfig:
    """Per-pixel linear classifier on frozen dense features, mIoU."""

    layer: str = opt("layer4", "dense stage", choices=_LAYERS)
    stride_change: str = opt("dilation", "layer3/4 strides: dilation, stride or none", choices=_STRIDE)
    pixels: int = opt(200_000, "training pixels (map cells), spread evenly over the images", range=(1, None))
    weight_decay: float = opt(1e-4, "L2 penalty λ of the logistic regression", range=(0.0, None))
    max_iter: int = opt(500, "L-BFGS iterations", range=(1, None))


@dataclass
class DenseEvalConfig:
    """Where the dense evaluations take their images and masks, and how each runs."""

    dataset: str = opt(
        "world",
        "world (scenes / clips of the world preset), voc (segment-retrieval, seg-probe) or davis "
        "(label-propagation); --dataset overrides it",
        choices=DENSE_DATASETS,
    )
    root: str = opt("", "VOC or DAVIS folder; --root overrides it")
    scenes: str = opt(
        "scenes", "world dataset of scenes with category masks: a seeded half is the train bank, the rest val"
    )
    clips: str = opt("clips", "world dataset of clips (kind: clips) for label propagation")
    voc_year: str = opt("2012", "VOC year (folder VOC<year>)", choices=("2007", "2012"))
    voc_train: str = opt("train", "VOC segmentation split of the bank / probe training set")
    voc_val: str = opt("val", "VOC segmentation split scored")
    voc_size: int = opt(
        512, "VOC images and masks are resized to size x size; 0 = each image's own", range=(0, 4096)
    )
    davis_split: str = opt("val", "DAVIS-2017 split (ImageSets/2017/<split>.txt)")
    davis_size: int = opt(0, "DAVIS frames resized to this shorter side; 0 = native 480p", range=(0, 4096))
    max_items: int = opt(
        0, "use only the first N images / videos of each split (quick runs); 0 = all", range=(0, None)
    )
    batch_size: int = opt(16, "images per forward pass", range=(1, None))
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    seg_probe: SegProbeConfig = field(default_factory=SegProbeConfig)
