"""Random draws of factors: which objects (long tail, domains, splits), cameras, lights, occluders, backgrounds.

Every function takes an explicit ``torch.Generator`` and returns CPU tensors, so a dataset is a deterministic
function of its seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invarlab.errors import ConfigError

from .background import BACKGROUND_KINDS, PHOTO_KIND, PHOTO_NAMES
from .catalog import CATEGORY_GROUPS, CATEGORY_NAMES
from .config import DatasetSpec, FactorRanges, WorldConfig
from .factors import Factors
from .shading import TEXTURE_KINDS, temperature_rgb

TRAIN_FRACTION = 0.8


def uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def category_ids(spec: DatasetSpec) -> list[int]:
    """Category ids a dataset draws from: names, or group names from ``CATEGORY_GROUPS``, or all."""
    if not spec.categories:
        return list(range(len(CATEGORY_NAMES)))
    ids: list[int] = []
    for name in spec.categories:
        members = CATEGORY_GROUPS.get(name, (name,))
        if any(m not in CATEGORY_NAMES for m in members):
            raise ConfigError(
                f"unknown category {name!r} in datasets.<name>.categories; use any of "
                f"{', '.join(CATEGORY_NAMES)} or a group: {', '.join(CATEGORY_GROUPS)}"
            )
        ids += [CATEGORY_NAMES.index(m) for m in members if CATEGORY_NAMES.index(m) not in ids]
    return ids


def long_tail_weights(n_categories: int, imbalance: float) -> Tensor:
    """Exponential profile ``w_c = imbalance^(-c / (C - 1))``: the head has ``imbalance`` times the tail's share."""
    if n_categories == 1:
        return torch.ones(1)
    c = torch.arange(n_categories, dtype=torch.float64)
    return torch.as_tensor(imbalance, dtype=torch.float64).pow(-c / (n_categories - 1))


def long_tail_counts(total: int, n_categories: int, imbalance: float) -> Tensor:
    """Integer images per category following :func:`long_tail_weights` that sum exactly to ``total``."""
    w = long_tail_weights(n_categories, imbalance)
    raw = w / w.sum() * total
    counts = raw.floor().long()
    rest = total - int(counts.sum())
    counts[torch.argsort(raw - counts, descending=True)[:rest]] += 1
    return counts


def instance_range(spec: DatasetSpec, per_category: int) -> tuple[int, int]:
    """Instance ids of a split: train the first 80%, test the rest, all everything."""
    cut = max(1, min(per_category - 1, round(per_category * TRAIN_FRACTION))) if per_category > 1 else 1
    return {
        "train": (0, cut),
        "test": (cut if per_category > 1 else 0, per_category),
        "all": (0, per_category),
    }[spec.split]


def draw_objects(
    n: int, spec: DatasetSpec, world: WorldConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Category and instance of ``n`` objects; category counts follow the long-tail profile exactly."""
    cats = torch.tensor(category_ids(spec))
    counts = long_tail_counts(n, len(cats), spec.imbalance)
    category = cats.repeat_interleave(counts)[torch.randperm(n, generator=gen)]
    lo, hi = instance_range(spec, world.instances_per_category)
    instance = torch.randint(lo, hi, (n,), generator=gen)
    return category, instance


def texture_override(spec: DatasetSpec) -> int:
    return -1 if spec.texture_domain == "all" else TEXTURE_KINDS.index(spec.texture_domain)


def draw_lights(f: Factors, r: FactorRanges, gen: torch.Generator) -> None:
    n = f.batch_size
    f.light_azimuth = uniform(gen, n, 0.0, 360.0)
    f.light_elevation = uniform(gen, n, *r.light_elevation)
    f.light_temperature = uniform(gen, n, *r.light_temperature)
    f.light_rgb = temperature_rgb(f.light_temperature)


def draw_backgrounds(f: Factors, r: FactorRanges, gen: torch.Generator) -> None:
    n = f.batch_size
    photo = torch.rand(n, generator=gen) < r.photo_background_prob
    procedural_kinds = BACKGROUND_KINDS[:PHOTO_KIND]
    bad = [k for k in r.background_kinds if k not in procedural_kinds]
    if bad or not r.background_kinds:
        raise ConfigError(
            f"world.factors.background_kinds={list(r.background_kinds)}: give one or more of "
            f"{', '.join(procedural_kinds)} (photos are set by photo_background_prob)"
        )
    kinds = torch.tensor([BACKGROUND_KINDS.index(k) for k in r.background_kinds])
    procedural = kinds[torch.randint(0, len(kinds), (n,), generator=gen)]
    f.background_kind = torch.where(photo, PHOTO_KIND, procedural)
    f.background_colors = torch.rand(n, 2, 3, generator=gen) * 0.8 + 0.1
    proc = torch.stack(
        (uniform(gen, n, 0, 180), uniform(gen, n, 1.5, 5), uniform(gen, n, 0, 6.28), torch.zeros(n)), 1
    )
    pics = torch.stack(
        (
            torch.randint(0, len(PHOTO_NAMES), (n,), generator=gen).float(),
            torch.rand(n, generator=gen),
            torch.rand(n, generator=gen),
            uniform(gen, n, 0.25, 0.7),
        ),
        1,
    )
    f.background_params = torch.where(photo.unsqueeze(-1), pics, proc)


def draw_occluders(f: Factors, prob: float, coverage: tuple, gen: torch.Generator) -> None:
    n = f.batch_size
    on = torch.rand(n, generator=gen) < prob
    f.occluder_shape = torch.where(on, torch.randint(1, 3, (n,), generator=gen), 0)
    f.occluder_coverage = torch.where(on, uniform(gen, n, *coverage), 0.0)
    f.occluder_angle = uniform(gen, n, 0, 360)
    f.occluder_anchor = torch.rand(n, generator=gen)
    f.occluder_rgb = torch.rand(n, 3, generator=gen) * 0.7 + 0.15


def object_centric(n: int, spec: DatasetSpec, world: WorldConfig, gen: torch.Generator) -> Factors:
    """One object at the origin, centred, filling most of the frame; everything else random within ranges."""
    r = world.factors
    f = Factors.default(n)
    f.category[:, 0], f.instance[:, 0] = draw_objects(n, spec, world, gen)
    f.texture_override[:, 0] = texture_override(spec)
    f.azimuth = uniform(gen, n, *r.azimuth)
    f.elevation = uniform(gen, n, *r.elevation)
    f.distance = uniform(gen, n, *r.distance)
    f.shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * r.position
    draw_lights(f, r, gen)
    draw_occluders(f, r.occluder_prob, r.occluder_coverage, gen)
    draw_backgrounds(f, r, gen)
    return f


def scene_centric(n: int, spec: DatasetSpec, world: WorldConfig, gen: torch.Generator) -> Factors:
    """2 to 6 objects standing on a floor at random positions, scales and yaws, seen from a random orbit."""
    from .catalog import build_catalog

    bottom = build_catalog(world.seed, world.instances_per_category).bottom
    lo_n, hi_n = spec.objects_per_scene
    O = hi_n
    counts = torch.randint(lo_n, hi_n + 1, (n,), generator=gen)
    cats, insts = draw_objects(int(counts.sum()), spec, world, gen)
    f = Factors.default(n, O)
    f.category.fill_(-1)
    slot = torch.arange(O).expand(n, O) < counts.unsqueeze(1)
    f.category[slot], f.instance[slot] = cats, insts
    f.texture_override.fill_(texture_override(spec))
    f.scale = uniform(gen, n * O, 0.45, 0.85).view(n, O)
    f.yaw = uniform(gen, n * O, 0, 360).view(n, O)
    f.position = _scatter_on_floor(n, O, f.scale, gen)
    f.position[..., 1] = -bottom[f.category.clamp_min(0), f.instance] * f.scale  # stand on y = 0
    f.target = torch.tensor([0.0, 0.45, 0.0]).expand(n, 3).clone()
    f.azimuth = uniform(gen, n, 0, 360)
    f.elevation = uniform(gen, n, 8, 30)
    f.distance = uniform(gen, n, 5.2, 6.5)
    f.floor = torch.ones(n, dtype=torch.bool)
    f.floor_colors = torch.rand(n, 2, 3, generator=gen) * 0.5 + 0.3
    draw_lights(f, world.factors, gen)
    draw_occluders(f, 0.0, (0.0, 0.0), gen)
    draw_backgrounds(f, world.factors, gen)
    return f


def _scatter_on_floor(n: int, O: int, scale: Tensor, gen: torch.Generator, radius: float = 2.2) -> Tensor:
    """Positions in a disc, each new object kept at least 0.8 of the summed radii from earlier ones (50 tries)."""
    pos = torch.zeros(n, O, 3)
    for b in range(n):
        for o in range(O):
            for _ in range(50):
                a, rr = torch.rand(2, generator=gen).tolist()
                p = torch.tensor(
                    [
                        radius * rr**0.5 * torch.cos(torch.tensor(a * 6.283)).item(),
                        0.0,
                        radius * rr**0.5 * torch.sin(torch.tensor(a * 6.283)).item(),
                    ]
                )
                gap = (pos[b, :o] - p).norm(dim=-1) - 0.8 * (scale[b, :o] + scale[b, o])
                if o == 0 or bool((gap > 0).all()):
                    break
            pos[b, o] = p
    return pos


__all__ = ["BACKGROUND_KINDS", "category_ids", "long_tail_counts", "object_centric", "scene_centric"]
