"""Options of the real invariance datasets (``invarlab eval invariance RUN --dataset aloi|got10k|pascal3d``),
the ``real_sets`` section of :class:`invarlab.eval.config.EvalConfig`. Defaults are P1's protocol
(PAPERS.md §1.4); see docs/datasets.md."""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass, field

from invarlab.config import opt

__all__ = ["REAL_DATASETS", "AloiSetsConfig", "Got10kSetsConfig", "Pascal3dSetsConfig", "RealSetsConfig"]

REAL_DATASETS = ("aloi", "got10k", "pascal3d")


@dataclass
class AloiSetsConfig:
    """ALOI: one set per object (all its images of the kind), class = object."""

    root: str = opt("", "ALOI folder (extracted aloi_red2_{view,ill,col}.tar); --root overrides it")
    kinds: list[str] = opt(["viewpoint", "illum_direction", "illum_color"], "which ALOI set kinds to score")
    size: int = opt(128, "images are resized to size x size (P1: 128)", range=(8, 1024))
    max_objects: int = opt(0, "keep the first N objects (numeric order); 0 = all 1000", range=(0, None))


@dataclass
class Got10kSetsConfig:
    """GOT-10k train: one set per video, one random frame per cover level, box crops."""

    root: str = opt("", "GOT-10k folder holding train/list.txt (or the train folder); --root overrides it")
    size: int = opt(128, "box crops are resized to size x size (P1: 128)", range=(8, 1024))
    seed: int = opt(1992, "seed of the frame choice (P1: np.random.seed(1992))", range=(0, 2**32 - 1))
    min_cover_range: int = opt(
        4, "keep videos whose cover levels span at least this (max - min)", range=(0, 8)
    )
    stride: int = opt(1, "use every stride-th frame (P1: 1)", range=(1, None))
    max_videos: int = opt(
        0, "subsample to about this many videos (every len//N-th); 0 = all", range=(0, None)
    )
    drop_absent: bool = opt(False, "never choose frames marked absent in absence.label (P1 kept them)")


@dataclass
class Pascal3dSetsConfig:
    """Pascal3D+: instance sets (same coarse viewpoint) and instance+viewpoint sets, class = category."""

    root: str = opt("", "PASCAL3D+_release1.1 folder (or its parent); --root overrides it")
    kinds: list[str] = opt(["instance", "instance_viewpoint"], "which Pascal3D+ set kinds to score")
    size: int = opt(224, "box crops are resized to size x size (P1: 224)", range=(8, 1024))
    subsets: list[str] = opt(
        ["imagenet", "pascal"], "image subsets: imagenet (train + val lists), pascal (<cls>_pascal.txt)"
    )
    classes: list[str] = opt([], "categories to use; empty = every class with an ImageNet list")


@dataclass
class RealSetsConfig:
    """Real invariance datasets; each dataset's section holds its root and protocol options."""

    aloi: AloiSetsConfig = field(default_factory=AloiSetsConfig)
    got10k: Got10kSetsConfig = field(default_factory=Got10kSetsConfig)
    pascal3d: Pascal3dSetsConfig = field(default_factory=Pascal3dSetsConfig)
