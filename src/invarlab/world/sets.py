"""Invariance sets with P1's structure (PAPERS.md §1.4), each image with a ``set_id`` and ``class_id`` for RIS.

* viewpoint, illum_direction, illum_color (ALOI-like): a set is one instance under one sweep, everything else
  fixed; the class is the set (one class per object, as ALOI).
* occlusion (GOT-10k-like): one instance and view at coverage levels 0..8 (covered fraction = level / 10); the
  class is the category.
* instance (Pascal3D+-like): one category and viewpoint bin, different instances; class = category.
* instance_viewpoint: within a category, at most one image per azimuth bin, each a different instance.

Azimuth bins follow P1: ``az_bin = (azimuth mod 180) // 30`` (6 bins), ``el_bin = (elevation mod 90) // 30``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import DatasetSpec, WorldConfig
from .factors import Factors
from .sampling import instance_range, object_centric, uniform
from .shading import temperature_rgb

OCCLUSION_LEVELS = 9
SET_KINDS = ("viewpoint", "illum_direction", "illum_color", "occlusion", "instance", "instance_viewpoint")


def set_size(spec: DatasetSpec) -> int:
    if spec.kind == "occlusion":
        return OCCLUSION_LEVELS
    if spec.kind == "instance_viewpoint":
        return 6
    return spec.set_size


def invariance_set(
    spec: DatasetSpec, world: WorldConfig, gen: torch.Generator
) -> tuple[Factors, dict[str, Tensor]]:
    """Factors of ``num_images // set_size`` sets (whole sets only) and their ``set_id``/``class_id``/``sweep``."""
    k = set_size(spec)
    n_sets = max(1, spec.num_images // k)
    base = object_centric(n_sets, spec, world, gen)  # one draw per set: object, view, light, background
    base.occluder_shape.zero_()
    base.occluder_coverage.zero_()
    if spec.kind in ("viewpoint", "illum_direction", "illum_color"):
        # plain studio backdrop, as ALOI: the sweep is the only change inside a set
        base.background_kind.zero_()
    f = base.index(torch.arange(n_sets).repeat_interleave(k))
    step = torch.arange(k).repeat(n_sets)
    set_id = torch.arange(n_sets).repeat_interleave(k)
    class_id = set_id.clone()
    if spec.kind == "viewpoint":
        f.azimuth = (f.azimuth + step * 360.0 / k) % 360
    elif spec.kind == "illum_direction":
        f.light_azimuth = (f.light_azimuth + step * 360.0 / k) % 360
    elif spec.kind == "illum_color":
        kelvin = torch.logspace(torch.log10(torch.tensor(2500.0)), torch.log10(torch.tensor(10000.0)), k)
        f.light_temperature = kelvin[step]
        f.light_rgb = temperature_rgb(f.light_temperature)
    elif spec.kind == "occlusion":
        f.occluder_shape = torch.randint(1, 3, (n_sets,), generator=gen).repeat_interleave(k)
        f.occluder_coverage = step / 10.0
        class_id = f.category[:, 0].clone()
    elif spec.kind == "instance":
        f = _instances_per_bin(f, spec, world, gen, n_sets, k)
        class_id = f.category[:, 0].clone()
    elif spec.kind == "instance_viewpoint":
        f = _instances_per_bin(f, spec, world, gen, n_sets, k)
        f.azimuth = step * 30.0 + uniform(gen, len(step), 0, 30)  # one image per azimuth bin
        class_id = f.category[:, 0].clone()
    else:
        raise ValueError(f"not an invariance-set kind: {spec.kind}")
    return f, {"set_id": set_id, "class_id": class_id, "sweep": step, **viewpoint_bins(f)}


def _instances_per_bin(
    f: Factors, spec: DatasetSpec, world: WorldConfig, gen, n_sets: int, k: int
) -> Factors:
    """Give each image of a set a different instance of the set's category, viewpoint inside the set's bin."""
    lo, hi = instance_range(spec, world.instances_per_category)
    if hi - lo < k:
        raise ValueError(
            f"instance sets need {k} instances per category in split '{spec.split}', have {hi - lo}"
        )
    inst = torch.stack([lo + torch.randperm(hi - lo, generator=gen)[:k] for _ in range(n_sets)]).flatten()
    f.instance[:, 0] = inst
    az_bin = (f.azimuth % 180 // 30).floor()
    el_bin = (f.elevation % 90 // 30).floor()
    n = f.batch_size
    f.azimuth = az_bin * 30 + uniform(gen, n, 0, 30)
    f.elevation = (el_bin * 30 + uniform(gen, n, 0, 30)).clamp(max=85)
    return f


def viewpoint_bins(f: Factors) -> dict[str, Tensor]:
    return {"az_bin": (f.azimuth % 180 // 30).long(), "el_bin": (f.elevation % 90 // 30).long()}
