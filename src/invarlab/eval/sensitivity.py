"""Augmentation-sensitivity probes (PAPERS.md §3.8, Table 1 of §3.9): how much of what an augmentation changes
is still linearly readable from frozen features. LooC's claim is that a space kept *variant* to an augmentation
(``Z_rotation``, ``Z_colour``, ...) keeps that information, where MoCo trained with the augmentation loses it.

Every probe is the same linear probe (:func:`invarlab.eval.linear.linear_probe`: standardised features,
multinomial logistic regression, weight decay chosen on a validation split of the training side) on a
**grouped** split (:func:`grouped_split`): whole groups go to the test side, so a probe can never answer by
recognising something it was trained on.

* ``rotation``: every image ``x`` of a subset is rotated by ``r · 90°`` counter-clockwise, ``r ∈ {0, 1, 2, 3}``;
  the probe predicts ``r`` from ``f(rot_r(x))``. Groups are the source images, so the four copies of an image
  are all on one side. Chance is 25%. A representation invariant to quarter turns gives the same features
  for the four copies and scores exactly chance.
* ``colour``: the object's dominant hue (:func:`dominant_hue`) from its visible pixels, in ``hue_bins`` bins
  plus an "achromatic" class. Groups are objects (category, instance), so the probe must read the hue of
  objects it has never seen.
* ``light_colour``: the light's colour temperature in tertiles (as the factor probes bin it), grouped by object.
* ``texture``: the object's texture family (:func:`texture_family`: plain, stripes, checker, dots, marble) from
  the world catalogue, grouped by object.

Each returns ``{"top1": %, "chance": %, "num_values", "weight_decay", "n_train", "n_test"}``; ``chance`` is the
majority value's share of the test side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invarlab.eval.linear import WEIGHT_DECAY_GRID, linear_probe

__all__ = [
    "MIN_VALUE",
    "dominant_hue",
    "grouped_split",
    "light_colour_bins",
    "probe",
    "rgb_to_hsv",
    "rotate_quarter_turns",
    "rotation_copies",
    "rotation_probe",
    "sensitivity",
    "texture_family",
]

log = logging.getLogger(__name__)

MIN_VALUE = 0.15  # pixels darker than this (HSV value) have no reliable hue: shadows do not vote


def grouped_split(groups: Tensor, test_fraction: float = 0.25, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train_idx, test_idx)`` with whole groups on one side: ``max(1, round(test_fraction · G))`` of the
    ``G`` distinct groups (at most ``G − 1``), drawn at random from ``seed``, go to test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    uniq, inverse = torch.unique(groups.cpu(), return_inverse=True)
    if len(uniq) < 2:
        raise ValueError("a grouped split needs at least two groups")
    n_test = min(max(1, round(test_fraction * len(uniq))), len(uniq) - 1)
    is_test = torch.zeros(len(uniq), dtype=torch.bool)
    is_test[torch.randperm(len(uniq), generator=torch.Generator().manual_seed(seed))[:n_test]] = True
    mask = is_test[inverse]
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


def probe(
    features: Tensor,
    values: Tensor,
    groups: Tensor,
    test_fraction: float = 0.25,
    seed: int = 0,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
    max_iter: int = 500,
) -> dict[str, float]:
    """Linear-probe accuracy of integer ``values`` ``(N,)`` from ``features`` ``(N, D)`` on a
    :func:`grouped_split` of ``groups``; rows whose value is negative (unknown) are dropped first.
    ``weight_decays`` and ``max_iter`` go to :func:`~invarlab.eval.linear.linear_probe`."""
    if features.ndim != 2 or values.shape != (features.shape[0],) or groups.shape != values.shape:
        raise ValueError(
            f"features (N, D), values (N,) and groups (N,) must agree, got {tuple(features.shape)}, "
            f"{tuple(values.shape)}, {tuple(groups.shape)}"
        )
    keep = values >= 0
    features, values, groups = features[keep].cpu(), values[keep].cpu(), groups[keep].cpu()
    uniq, labels = torch.unique(values, return_inverse=True)
    if len(uniq) < 2:
        raise ValueError("the probed value takes a single value: there is nothing to decode")
    tr, te = grouped_split(groups, test_fraction, seed)
    out = linear_probe(
        features[tr],
        labels[tr],
        features[te],
        labels[te],
        weight_decays,
        seed=seed,
        num_classes=len(uniq),
        max_iter=max_iter,
    )
    chance = float(torch.bincount(labels[te], minlength=len(uniq)).max() / len(te) * 100)
    return {
        "top1": float(out["top1"]),  # type: ignore[arg-type]
        "chance": chance,
        "num_values": len(uniq),
        "weight_decay": float(out["weight_decay"]),  # type: ignore[arg-type]
        "n_train": len(tr),
        "n_test": len(te),
    }


# ------------------------------------------------------------------------------------------------- rotation
def rotate_quarter_turns(images: Tensor, turns: Tensor) -> Tensor:
    """Each image of ``(B, C, H, W)`` (square) rotated by ``turns[b] · 90°`` counter-clockwise
    (``torch.rot90`` on the last two axes, as the LooC rotation augmentation turns its views)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"quarter turns need square images, got {tuple(images.shape[-2:])}")
    out = images.clone()
    for k in range(1, 4):
        sel = turns == k
        if sel.any():
            out[sel] = torch.rot90(images[sel], k, dims=(-2, -1))
    return out


def rotation_copies(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(copies (4N, C, H, W), turns (4N,), source image (4N,))``: the 4 quarter turns of every image, image by
    image (rows ``4i .. 4i + 3`` are image ``i`` at 0, 90, 180, 270°)."""
    n = images.shape[0]
    turns = torch.arange(4).repeat(n)
    source = torch.arange(n).repeat_interleave(4)
    return rotate_quarter_turns(images[source], turns), turns, source


def rotation_probe(
    featurize: Callable[[Tensor], Tensor],
    images: Tensor,
    test_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 256,
    max_iter: int = 500,
) -> dict[str, float]:
    """4-way rotation prediction (module docstring). ``images`` ``(N, 3, S, S)`` uint8 or float in [0, 1];
    ``featurize`` maps float ``[0, 1]`` images to ``(B, D)`` features (normalisation is its own)."""
    copies, turns, source = rotation_copies(images)
    feats = []
    for start in range(0, copies.shape[0], batch_size):
        batch = copies[start : start + batch_size]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        feats.append(torch.as_tensor(featurize(batch)).float().cpu())
    return probe(torch.cat(feats), turns, source, test_fraction, seed, max_iter=max_iter)


# --------------------------------------------------------------------------------------------------- colour
def rgb_to_hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in degrees ``[0, 360)``, saturation and value in ``[0, 1]`` of float RGB ``(..., 3, H, W)`` in
    ``[0, 1]`` (the hexcone model of ``colorsys.rgb_to_hsv``; hue 0 where the pixel is grey)."""
    r, g, b = rgb.unbind(-3)
    v, _ = rgb.max(dim=-3)
    c = v - rgb.min(dim=-3).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    safe = c.clamp_min(1e-12)
    h = torch.where(v == r, ((g - b) / safe) % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h * 60.0, torch.zeros_like(h)) % 360.0
    return h, s, v


def dominant_hue(
    images: Tensor,
    masks: Tensor,
    bins: int = 6,
    min_saturation: float = 0.25,
    achromatic_share: float = 0.25,
) -> Tensor:
    """The dominant hue bin ``(N,)`` of the object in each image: ``images`` uint8 ``(N, 3, H, W)``, ``masks``
    bool ``(N, H, W)`` (the object's visible pixels).

    A pixel votes when its saturation is at least ``min_saturation`` and its value at least ``MIN_VALUE``;
    its bin is ``⌊((h + 180/bins) mod 360) / (360/bins)⌋`` (bin 0 centred on red, 0°). The object's bin is the
    one with most votes; when fewer than ``achromatic_share`` of its pixels vote, it is ``bins``
    ("achromatic": white, grey, black objects). ``-1`` when the object has no visible pixel."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    h, s, v = rgb_to_hsv(x)
    width = 360.0 / bins
    pixel_bin = (((h + width / 2) % 360.0) / width).long().clamp(max=bins - 1)
    votes = masks.bool() & (s >= min_saturation) & (v >= MIN_VALUE)
    counts = torch.zeros(x.shape[0], bins, dtype=torch.long)
    flat = (pixel_bin + bins * torch.arange(x.shape[0]).view(-1, 1, 1))[votes]
    counts.view(-1).index_add_(0, flat, torch.ones_like(flat))
    area = masks.bool().flatten(1).sum(1)
    out = counts.argmax(dim=1)
    out = torch.where(counts.sum(1) < achromatic_share * area, bins, out)
    return torch.where(area > 0, out, -1)


def light_colour_bins(kelvin: Tensor) -> Tensor:
    """Tertiles of the light's colour temperature (the factor probes' ``light_color``): 0 warm .. 2 cold."""
    kelvin = kelvin.double()
    edges = torch.quantile(kelvin, torch.tensor([1 / 3, 2 / 3], dtype=kelvin.dtype))
    return torch.bucketize(kelvin, edges)


# -------------------------------------------------------------------------------------------------- texture
def texture_family(
    category: Tensor, instance: Tensor, texture_override: Tensor, world_seed: int, instances_per_category: int
) -> Tensor:
    """The texture family ``(N,)`` of each object, an index into ``invarlab.world.shading.TEXTURE_KINDS``.

    An instance's palette draws one texture kind and paints its main parts with it (every other part is
    plain), so the family is the one non-plain kind among its parts, or plain; a dataset that overrides
    textures (``texture_override >= 0``) paints every part with the override."""
    from invarlab.world.catalog import build_catalog

    cat = build_catalog(world_seed, instances_per_category)
    kinds = torch.where(cat.valid, cat.texture[..., 0], torch.zeros_like(cat.texture[..., 0]))
    family = kinds.amax(dim=-1).round().long()  # (C, I): plain = 0 < every other kind
    own = family[category.long().clamp_min(0), instance.long()]
    return torch.where(texture_override >= 0, texture_override.long(), own)


# ---------------------------------------------------------------------------------------------- evaluator
def _column(meta: dict[str, np.ndarray], name: str) -> Tensor:
    return torch.as_tensor(np.asarray(meta[name]))


def sensitivity(ctx: Any, rep: str) -> dict[str, Any]:
    """The probes of ``ctx.cfg.sensitivity.probes`` for representation ``rep`` of an
    :class:`~invarlab.eval.context.EvalContext`, on its world dataset ``ctx.cfg.sensitivity.dataset``."""
    from invarlab.errors import ConfigError
    from invarlab.eval.looc_config import SENSITIVITY_PROBES

    c = ctx.cfg.sensitivity
    unknown = [p for p in c.probes if p not in SENSITIVITY_PROBES]
    if unknown or not c.probes:
        raise ConfigError(
            f"sensitivity.probes={list(c.probes)}: use one or more of {', '.join(SENSITIVITY_PROBES)}"
        )
    ds = ctx.dataset(c.dataset)
    seed = ctx.cfg.seed
    out: dict[str, Any] = {}
    if "rotation" in c.probes:
        n = len(ds)
        keep = (
            torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: c.rotation_images]
            .sort()
            .values
        )
        images = torch.stack([ds[int(i)][0] for i in keep])
        out["rotation"] = rotation_probe(
            ctx.featurize(rep), images, c.test_fraction, seed, ctx.cfg.batch_size, c.max_iter
        )
    factors = [p for p in c.probes if p != "rotation"]
    if not factors:
        return out
    feats, _ = ctx.features(rep, c.dataset)
    meta = ds.meta
    world = ds.rendered.config.get("world", {})
    per_category = int(world.get("instances_per_category", 0)) or int(_column(meta, "instance_0").max()) + 1
    category, instance = _column(meta, "category_0").long(), _column(meta, "instance_0").long()
    objects = category * per_category + instance
    for name in factors:
        if name == "colour":
            masks = torch.from_numpy(np.asarray(ds.rendered.instance_mask)[ds.indices] == 1)
            images = torch.from_numpy(np.asarray(ds.rendered.images)[ds.indices])
            values = dominant_hue(images, masks, c.hue_bins, c.min_saturation, c.achromatic_share)
        elif name == "light_colour":
            values = light_colour_bins(_column(meta, "light_temperature"))
        else:
            override = _column(meta, "texture_override_0").long()
            values = texture_family(category, instance, override, int(world.get("seed", 0)), per_category)
        if len(torch.unique(values[values >= 0])) < 2:
            log.warning("sensitivity probe '%s': a single value in '%s', skipped", name, c.dataset)
            continue
        out[name] = probe(feats, values, objects, c.test_fraction, seed, max_iter=c.max_iter)
    return out
