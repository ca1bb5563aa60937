"""Structured configuration of the rendered world and of the datasets drawn from it.

Every field carries ``help`` and, where it applies, an allowed ``range`` (inclusive) or ``choices`` in its
metadata; :mod:`invarlab.config` validates against them and prints them in ``--help``.
"""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass, field

from invarlab.config import opt

DATASET_KINDS = (
    "object_centric",
    "scene_centric",
    "cropped_boxes",
    "clips",
    "viewpoint",
    "illum_direction",
    "illum_color",
    "occlusion",
    "instance",
    "instance_viewpoint",
)


@dataclass
class RenderConfig:
    """How images are rendered (not what is in them)."""

    resolution: int = opt(64, "image height and width in pixels", range=(16, 1024))
    supersample: int = opt(2, "anti-aliasing: s x s samples per pixel (1 = off)", range=(1, 4))
    adaptive: bool = opt(
        True, "supersample only pixels on a surface edge (false: every pixel, about 3x slower)"
    )
    fov_deg: float = opt(
        40.0, "vertical field of view of the perspective camera, degrees", range=(10.0, 120.0)
    )
    ambient: float = opt(0.35, "ambient light strength", range=(0.0, 1.0))
    diffuse: float = opt(0.75, "directional (Lambertian) light strength", range=(0.0, 2.0))
    specular: float = opt(0.2, "specular (Blinn-Phong) strength; 0 disables it", range=(0.0, 2.0))
    shininess: float = opt(24.0, "specular exponent", range=(1.0, 256.0))
    batch_size: int = opt(64, "images rendered per batch", range=(1, 4096))
    device: str = opt("cpu", "torch device to render on ('cpu', 'cuda', 'cuda:1', ...)")
    compile: bool = opt(True, "fuse the renderer with torch.compile (falls back to eager if unavailable)")


@dataclass
class FactorRanges:
    """Ranges factors are drawn from when a dataset samples them at random."""

    azimuth: list[float] = opt([0.0, 360.0], "camera azimuth range, degrees [lo, hi]", interval=True)
    elevation: list[float] = opt([5.0, 40.0], "camera elevation range, degrees [lo, hi]", interval=True)
    distance: list[float] = opt([2.7, 3.3], "camera distance range, in object radii [lo, hi]", interval=True)
    position: float = opt(
        0.08, "max object offset from the frame centre, fraction of the frame", range=(0.0, 0.5)
    )
    light_elevation: list[float] = opt([20.0, 80.0], "light elevation range, degrees [lo, hi]", interval=True)
    light_temperature: list[float] = opt(
        [3000.0, 9000.0], "light colour temperature range, kelvin [lo, hi]", interval=True
    )
    occluder_prob: float = opt(
        0.0, "probability that an object-centric image has an occluder", range=(0.0, 1.0)
    )
    occluder_coverage: list[float] = opt(
        [0.1, 0.6], "covered fraction of the object when occluded [lo, hi]", interval=True
    )
    photo_background_prob: float = opt(
        0.5, "probability of a photo background (else procedural)", range=(0.0, 1.0)
    )
    background_kinds: list[str] = opt(
        ["gradient", "stripes", "checker", "blobs"],
        "procedural backgrounds to draw from (uniformly): gradient, stripes, checker, blobs",
    )


@dataclass
class DatasetSpec:
    """One dataset drawn from the world."""

    kind: str = opt("object_centric", "what to render", choices=DATASET_KINDS)
    num_images: int = opt(1000, "images (or frames, for clips) to render", range=(1, 10_000_000))
    seed: int = opt(0, "seed of this dataset's factor draws", range=(0, 2**31 - 1))
    split: str = opt(
        "train",
        "instance split: 'train' (first 80% of instances), 'test' (last 20%), 'all'",
        choices=("train", "test", "all"),
    )
    categories: list[str] = opt([], "category names to draw from; empty = every category")
    texture_domain: str = opt(
        "all",
        "restrict object textures to one family",
        choices=("all", "plain", "stripes", "checker", "dots", "marble"),
    )
    imbalance: float = opt(
        1.0, "long-tail imbalance factor n_max / n_min over categories (1 = uniform)", range=(1.0, 1000.0)
    )
    objects_per_scene: list[int] = opt(
        [2, 6], "scene-centric: min and max objects per scene [lo, hi]", interval=True, range=(1, None)
    )
    clip_length: int = opt(16, "clips: frames per clip", range=(2, 1000))
    set_size: int = opt(
        12, "invariance sets: images per set (viewpoints, light directions, colours)", range=(3, 360)
    )
    min_box: int = opt(12, "cropped boxes: minimum box side in pixels of the scene image", range=(1, 1024))


@dataclass
class WorldConfig:
    """The world: catalogue seed, rendering and factor ranges."""

    seed: int = opt(0, "seed of the catalogue (categories and instances)", range=(0, 2**31 - 1))
    instances_per_category: int = opt(50, "instances per category", range=(1, 10_000))
    render: RenderConfig = field(default_factory=RenderConfig)
    factors: FactorRanges = field(default_factory=FactorRanges)


@dataclass
class WorldPreset:
    """A world and the datasets to render from it (``invarlab world render|show``)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict, metadata={"help": "name -> dataset spec"})
    cache_dir: str = opt(
        "", "where rendered datasets are cached; empty = $INVARLAB_CACHE or ~/.cache/invarlab"
    )
