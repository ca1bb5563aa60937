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
* ``colour_jitter``: the analogue of ``rotation`` for LooC's colour augmentation: every image of a subset
  is shown in :data:`JITTER_SETTINGS`' ten fixed colour transforms - unchanged, grayscale, and each
  ColorJitter component (brightness, contrast, saturation, hue) alone at either end of its range
  (``1 ± s``, hue ``± h``; MoCo v2's strengths 0.4 / 0.4 / 0.4 / 0.1 by default); the probe predicts which
  transform from ``f(T_c(x))``. Groups are the source images; chance is 10%. A representation invariant to
  the colour augmentation gives the same features for the ten copies and scores chance.
* ``colour``: the object's dominant hue (:func:`dominant_hue`) from its visible pixels, in ``hue_bins`` bins
  plus an "achromatic" class. Groups are objects (category, instance), so the probe must read the hue of
  objects it has never seen.
* ``light_colour``: the light's colour temperature in tertiles (as the factor probes bin it), grouped by object.
* ``texture``: the object's texture family (:func:`texture_family`: plain, stripes, checker, dots, marble) from
  the world catalogue, grouped by object.

Each returns ``{"top1": %, "knn_top1": %, "chance": %, "num_values", "weight_decay", "n_train", "n_test"}``;
``chance`` is the majority value's share of the test side. ``knn_top1`` decodes the same split by weighted kNN
(:func:`invarlab.eval.knn.knn_accuracy`: cosine similarity, ``k`` neighbours, ``τ = 0.1``), in the
representation's own geometry, the one its contrastive loss shapes. The linear probe standardises every
feature first, so it reads a direction however little it varies: a LooC head that is a full-rank map of ``V``
decodes like ``V`` linearly even when the loss has shrunk what it is invariant to; nearest neighbours see that
shrinking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invarlab.eval.knn import knn_accuracy
from invarlab.eval.linear import WEIGHT_DECAY_GRID, linear_probe

__all__ = [
    "JITTER_SETTINGS",
    "MIN_VALUE",
    "colour_jitter_copies",
    "colour_jitter_probe",
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
    knn_k: int = 20,
) -> dict[str, float]:
    """Linear-probe (``top1``) and kNN (``knn_top1``, ``knn_k`` neighbours) accuracy of integer ``values``
    ``(N,)`` from ``features`` ``(N, D)`` on a :func:`grouped_split` of ``groups``; rows whose value is negative
    (unknown) are dropped first. ``weight_decays`` and ``max_iter`` go to
    :func:`~invarlab.eval.linear.linear_probe`."""
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
    knn = knn_accuracy(features[tr], labels[tr], features[te], labels[te], knn_k, 0.1, len(uniq))
    chance = float(torch.bincount(labels[te], minlength=len(uniq)).max() / len(te) * 100)
    return {
        "top1": float(out["top1"]),  # type: ignore[arg-type]
        "knn_top1": float(knn["top1"]),
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
    knn_k: int = 20,
) -> dict[str, float]:
    """4-way rotation prediction (module docstring). ``images`` ``(N, 3, S, S)`` uint8 or float in [0, 1];
    ``featurize`` maps float ``[0, 1]`` images to ``(B, D)`` features (normalisation is its own)."""
    copies, turns, source = rotation_copies(images)
    feats = _featurize_all(featurize, copies, batch_size)
    return probe(feats, turns, source, test_fraction, seed, max_iter=max_iter, knn_k=knn_k)


def _featurize_all(featurize: Callable[[Tensor], Tensor], images: Tensor, batch_size: int) -> Tensor:
    """``featurize`` over ``images`` in batches (uint8 or float ``[0, 1]`` in, float32 features out)."""
    feats = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        feats.append(torch.as_tensor(featurize(batch)).float().cpu())
    return torch.cat(feats)


# -------------------------------------------------------------------------------------------- colour jitter
# (name, ColorJitter component index or None, signed end of its range): see colour_jitter_copies
JITTER_SETTINGS: tuple[tuple[str, int | None, int], ...] = (
    ("identity", None, 0),
    ("grayscale", None, 0),
    ("brightness-", 0, -1),
    ("brightness+", 0, 1),
    ("contrast-", 1, -1),
    ("contrast+", 1, 1),
    ("saturation-", 2, -1),
    ("saturation+", 2, 1),
    ("hue-", 3, -1),
    ("hue+", 3, 1),
)


def _strengths_problem(strengths: Sequence[float]) -> str | None:
    """What is wrong with colour-jitter ``strengths`` (None when nothing is)."""
    if len(strengths) != 4 or not all(v > 0 for v in strengths) or strengths[3] > 0.5:
        return "give 4 positive strengths (brightness, contrast, saturation, hue <= 0.5)"
    return None


def colour_jitter_copies(
    images: Tensor, strengths: Sequence[float] = (0.4, 0.4, 0.4, 0.1)
) -> tuple[Tensor, Tensor, Tensor]:
    """``(copies (10N, C, H, W), setting (10N,), source image (10N,))``: every float ``[0, 1]`` image under each
    of :data:`JITTER_SETTINGS`, image by image (rows ``10i .. 10i + 9``). Setting ``c`` applies one op:
    nothing, ITU-R 601 grayscale, or ColorJitter component ``j`` alone with factor ``1 + sign · s_j``
    (brightness, contrast, saturation) or ``sign · h`` (hue), ``strengths = (s_b, s_c, s_s, h)``: the ends
    of the ranges that MoCo v2's ``ColorJitter(s_b, s_c, s_s, h)`` draws from."""
    from invarlab.views.ops import JITTER_IDENTITY, color_jitter, grayscale

    problem = _strengths_problem(strengths)
    if problem:
        raise ValueError(f"strengths {list(strengths)}: {problem}")
    n, k = images.shape[0], len(JITTER_SETTINGS)
    per_setting = []
    order = torch.arange(4).repeat(n, 1)
    for name, component, sign in JITTER_SETTINGS:
        if component is None:
            per_setting.append(grayscale(images) if name == "grayscale" else images.clone())
            continue
        factors = torch.tensor(JITTER_IDENTITY, dtype=images.dtype).repeat(n, 1)
        factors[:, component] += sign * strengths[component]
        per_setting.append(color_jitter(images, factors, order))
    copies = torch.stack(per_setting, dim=1).flatten(0, 1)  # (N, K, ...) -> image-major rows
    return copies, torch.arange(k).repeat(n), torch.arange(n).repeat_interleave(k)


def colour_jitter_probe(
    featurize: Callable[[Tensor], Tensor],
    images: Tensor,
    strengths: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
    test_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 256,
    max_iter: int = 500,
    knn_k: int = 20,
) -> dict[str, float]:
    """10-way colour-transform prediction (module docstring); arguments as :func:`rotation_probe`."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    copies, setting, source = colour_jitter_copies(x, strengths)
    feats = _featurize_all(featurize, copies, batch_size)
    return probe(feats, setting, source, test_fraction, seed, max_iter=max_iter, knn_k=knn_k)


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


def _random_images(ds: Any, count: int, seed: int) -> Tensor:
    """``count`` images of ``ds`` (all when it has fewer), a fixed random subset in dataset order."""
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return torch.stack([ds[int(i)][0] for i in keep])


def sensitivity(ctx: Any, rep: str) -> dict[str, Any]:
    """The probes of ``ctx.cfg.sensitivity.probes`` for representation ``rep`` of an
    :class:`~invarlab.eval.context.EvalContext`, on its world dataset ``ctx.cfg.sensitivity.dataset``."""
    from invarlab.errors import ConfigError
    from invarlab.eval.looc_config import AUGMENTATION_PROBES, SENSITIVITY_PROBES

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
        out["rotation"] = rotation_probe(
            ctx.featurize(rep),
            _random_images(ds, c.rotation_images, seed),
            c.test_fraction,
            seed,
            ctx.cfg.batch_size,
            c.max_iter,
            c.knn_k,
        )
    if "colour_jitter" in c.probes:
        problem = _strengths_problem(c.jitter_strengths)
        if problem:
            raise ConfigError(
                f"sensitivity.jitter_strengths={list(c.jitter_strengths)}: {problem}, e.g. [0.4, 0.4, 0.4, 0.1]"
            )
        out["colour_jitter"] = colour_jitter_probe(
            ctx.featurize(rep),
            _random_images(ds, c.jitter_images, seed),
            c.jitter_strengths,
            c.test_fraction,
            seed,
            ctx.cfg.batch_size,
            c.max_iter,
            c.knn_k,
        )
    factors = [p for p in c.probes if p not in AUGMENTATION_PROBES]
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
        out[name] = probe(feats, values, objects, c.test_fraction, seed, max_iter=c.max_iter, knn_k=c.knn_k)
    return out
