"""Options of P3's evaluations (PAPERS.md §3.8; docs/eval_looc.md): which LooC spaces are evaluated
(``looc``), the augmentation-sensitivity probes (``sensitivity``) and fine-grained classification
(``finegrained``), sections of :class:`invarlab.eval.config.EvalConfig`."""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass

from invarlab.config import opt

__all__ = [
    "AUGMENTATION_PROBES",
    "FINEGRAINED_DATASETS",
    "LOOC_EVALUATIONS",
    "SENSITIVITY_PROBES",
    "FinegrainedConfig",
    "LoocEvalConfig",
    "SensitivityConfig",
]

LOOC_EVALUATIONS = ("sensitivity", "finegrained")
SENSITIVITY_PROBES = ("rotation", "colour_jitter", "colour", "light_colour", "texture")
AUGMENTATION_PROBES = ("rotation", "colour_jitter")  # probes of transformed copies, not of world factors
FINEGRAINED_DATASETS = ("world", "cub", "flowers")


@dataclass
class LoocEvalConfig:
    """For a LooC run: evaluate every embedding space and LooC++ beside the backbone ``V`` (``model``)."""

    spaces: bool = opt(
        False,
        "add z0, z_<aug>... and looc++ to the representations (LooC runs; ignored, with a warning, otherwise)",
    )
    layer: str = opt(
        "run",
        "layer each space is read at: run (the run's looc_plus_layer), hidden or output",
        choices=("run", "hidden", "output"),
    )
    with_v: bool | None = opt(None, "LooC++ includes V first (null: the run's looc_plus_with_v)")


@dataclass
class SensitivityConfig:
    """Linear probes of what the augmentations change: rotation (4-way, of rotated copies), the colour transform
    (10-way, of recoloured copies), the object's dominant hue, the light colour and the object's texture
    family (world metadata)."""

    dataset: str = opt("probes", "object-centric world dataset of the probes (every factor recorded)")
    probes: list[str] = opt(list(SENSITIVITY_PROBES), f"which probes: {', '.join(SENSITIVITY_PROBES)}")
    rotation_images: int = opt(
        500, "images rotated by 0/90/180/270 (a fixed random subset when there are more)", range=(2, None)
    )
    jitter_images: int = opt(
        500,
        "images shown in the 10 colour transforms (a fixed random subset when there are more)",
        range=(2, None),
    )
    jitter_strengths: list[float] = opt(
        [0.4, 0.4, 0.4, 0.1],
        "colour_jitter: brightness, contrast, saturation, hue strengths whose range ends are the transforms",
    )
    test_fraction: float = opt(
        0.25,
        "share of groups (images for rotation / colour_jitter, objects otherwise) held out",
        range=(0.01, 0.99),
    )
    hue_bins: int = opt(6, "hue bins of the colour probe (equal widths from red = 0°)", range=(2, 36))
    min_saturation: float = opt(
        0.25, "colour probe: pixels at least this saturated (HSV) vote for a hue", range=(0.0, 1.0)
    )
    knn_k: int = opt(
        20, "neighbours of each probe's kNN decoding (knn_top1, cosine, tau 0.1)", range=(1, None)
    )
    max_iter: int = opt(500, "L-BFGS iterations of each probe fit (as the linear probe)", range=(1, None))
    achromatic_share: float = opt(
        0.25,
        "colour probe: an object with fewer saturated pixels than this share of its own is 'achromatic'",
        range=(0.0, 1.0),
    )


@dataclass
class FinegrainedConfig:
    """Fine-grained classification: linear probe, kNN and k-shot all-way episodes (PAPERS.md §3.8)."""

    dataset: str = opt(
        "world", "world (instances within categories), cub or flowers", choices=FINEGRAINED_DATASETS
    )
    root: str = opt("", "CUB_200_2011 / Flowers-102 folder (--root overrides it)")
    world_dataset: str = opt("finegrained", "world dataset with several images per instance")
    test_fraction: float = opt(
        0.3, "world: share of every instance's images held out for testing", range=(0.05, 0.95)
    )
    size: int = opt(
        0,
        "cub / flowers: images resized (shorter side) and centre-cropped to this; 0 = the eval image size",
        range=(0, 1024),
    )
    shots: list[int] = opt([5, 10], "support images per class of the few-shot episodes (Flowers-102: 5, 10)")
    trials: int = opt(10, "few-shot trials per setting (3P protocol: 10)", range=(2, None))
    flowers_support: str = opt(
        "train+val",
        "flowers: split the linear probe trains on and few-shot support is drawn from",
        choices=("train", "train+val"),
    )
