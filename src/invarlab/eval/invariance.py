r"""How invariant a representation is: P1's Top-K Representation Invariance Score (RIS), and linear probes of
the factors of variation (can a factor be decoded from the features at all?).

RIS, exactly as PAPERS.md §1.3 (the official ``measure_invariances.py``). ``F`` ``(N, D)`` are the features of
one invariance dataset; every image belongs to a *set* (one target under the transformation studied) and every
set to a *class*; ``C`` is the number of distinct classes (over all images).

1. ``p = min((1 − 1/C)·100, 95)``, ``idx = ⌊N p / 100⌋`` (as ``int(N*p // 100)``).
2. Per neuron ``d``: ``τ⁺_d = sort↑(F_{:,d})[idx]``, ``τ⁻_d = sort↓(F_{:,d})[idx]``,
   ``G_d = (1/N) Σ_x [F_{x,d} ≥ τ⁺_d]`` (positive sign only, non-strict).
3. For every set ``s`` with ``|s| ≥ 3`` (smaller sets are skipped): ``f⁺_{s,d} = Σ_{x∈s} [F_{x,d} > τ⁺_d]``,
   ``f⁻_{s,d} = Σ_{x∈s} [F_{x,d} < τ⁻_d]``, ``f_{s,d} = max(f⁺, f⁻)`` (the sign is chosen per set), and per
   class, over the sets that fired at all:
   ``L_{c,d} = Σ_{s∈c, f>0} (f_{s,d}/|s|) / (#{s∈c: f_{s,d}>0} + 1e-20)``.
4. ``I_{c,d} = L_{c,d} / G_d``;
   ``RIS_K = (100 − p) · (1/C) Σ_c (1/K) Σ_{d ∈ TopK_d(I_{c,·})} I_{c,d}``: top-K neurons per class, mean over
   classes (a class whose sets are all smaller than 3 contributes 0, as in the official code).

A set's class is its images' class (the official code reads it from the set's first image; here a set whose
images disagree is an error). Everything is computed with tensor reductions, no loop over sets or classes:
thresholds by ``topk`` over a neuron's candidate tail (about 6% of the images), set counts by ``bincount`` of
the firing entries, class sums by ``index_add`` over a class index; only the neurons are processed in blocks,
to bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from invarlab.eval.linear import WEIGHT_DECAY_GRID, linear_probe, stratified_split

__all__ = [
    "azimuth_bins",
    "elevation_bins",
    "factor_probe",
    "firing_percentile",
    "light_direction_bins",
    "ris",
]


def firing_percentile(num_classes: int) -> float:
    """``p = min((1 − 1/C)·100, 95)``: each neuron fires on about ``(100 − p)%`` of the images."""
    return min((1.0 - 1.0 / num_classes) * 100, 95)


def _ids(x: Tensor | Sequence[int], n: int, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.shape != (n,):
        raise ValueError(f"{name} must be ({n},), one id per feature row, got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer ids, got dtype {t.dtype}")
    return t


def _tail(xt: Tensor, top: int, largest: bool, sample: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row (neuron) of ``xt`` ``(b, N)``: the ``top``-th largest value (``largest``) or ``top``-th
    smallest, and every entry at least that extreme, as ``(threshold (b,), neurons, images, values)`` (a
    superset: the candidates).

    Exact, but only the candidates are ranked: a loose bound from every ``N // sample``-th image keeps about
    ``top`` entries per neuron plus a margin of five binomial standard deviations; a neuron whose bound keeps
    fewer than ``top`` (a sample that misrepresents it) is redone with its exact threshold. Every entry beyond
    the threshold is a candidate, because the bound is not beyond the threshold."""
    b, n = xt.shape
    sub = xt[:, :: max(1, n // sample)].contiguous()
    expected = top * sub.shape[1] / n
    k_sub = min(sub.shape[1], math.ceil(expected + 5 * math.sqrt(expected) + 1))
    sub_top = sub.topk(k_sub, dim=1, largest=largest, sorted=False).values
    bound = (sub_top.amin(dim=1) if largest else sub_top.amax(dim=1))[:, None]
    neurons, images, counts = _beyond(xt, bound, largest)
    short = counts < top
    if bool(short.any()):
        exact = xt[short].topk(top, dim=1, largest=largest, sorted=False).values
        bound[short] = (exact.amin(dim=1) if largest else exact.amax(dim=1))[:, None]
        neurons, images, counts = _beyond(xt, bound, largest)
    values = xt.reshape(-1)[neurons * n + images]
    pos = torch.arange(len(neurons), device=xt.device) - (torch.cumsum(counts, 0) - counts)[neurons]
    width = int(counts.max())
    padded = torch.full((b * width,), -math.inf if largest else math.inf, dtype=xt.dtype, device=xt.device)
    padded[neurons * width + pos] = values
    padded = padded.view(b, width)
    # The top-th most extreme of a row of `width` is the (width − top + 1)-th least extreme (the padding is
    # the least extreme of all); selecting the shorter end is cheaper.
    rest = padded.topk(width - top + 1, dim=1, largest=not largest, sorted=False).values
    threshold = rest.amax(dim=1) if largest else rest.amin(dim=1)
    return threshold, neurons, images, values


def _beyond(xt: Tensor, bound: Tensor, largest: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(neurons, images, counts)`` of the entries of ``xt`` at or beyond ``bound`` ``(b, 1)``, grouped by
    neuron, and how many each neuron has."""
    # Flat indices (one nonzero pass, no boolean indexing), split into row and column.
    flat = (xt >= bound if largest else xt <= bound).view(-1).nonzero().squeeze(1)
    neurons = torch.div(flat, xt.shape[1], rounding_mode="floor")
    return neurons, flat - neurons * xt.shape[1], torch.bincount(neurons, minlength=xt.shape[0])


@torch.no_grad()
def ris(
    features: Tensor,
    set_ids: Tensor | Sequence[int],
    class_ids: Tensor | Sequence[int] | None,
    ks: Sequence[int] = (10, 25),
    block: int = 512,
    sample: int = 4096,
) -> dict[int, float]:
    """``{K: RIS_K}`` for each ``K`` in ``ks`` (module docstring), on ``features`` ``(N, D)`` with integer
    ``set_ids`` and ``class_ids`` ``(N,)`` (any values; ``class_ids=None`` uses the set as the class, the
    official fallback). Comparisons run in the features' dtype, rates and means in float64.

    ``block`` neurons are processed at a time; ``sample`` rows pre-select threshold candidates (speed only:
    the result is exact for any value)."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) tensor, got {tuple(features.shape)}")
    if not features.dtype.is_floating_point:
        features = features.float()
    n, d = features.shape
    set_ids = _ids(set_ids, n, "set_ids")
    class_ids = set_ids if class_ids is None else _ids(class_ids, n, "class_ids")
    for k in ks:
        if not 1 <= k <= d:
            raise ValueError(f"ks must lie in [1, D={d}] (top-K neurons of D), got {k}")
    dev = features.device
    set_of = torch.unique(set_ids.to(dev), return_inverse=True)[1]
    classes, class_of = torch.unique(class_ids.to(dev), return_inverse=True)
    n_classes = len(classes)
    p = firing_percentile(n_classes)
    top = n - int(n * p // 100)  # τ⁺ = sort↑[idx] is the top-th largest value, τ⁻ the top-th smallest

    sizes = torch.bincount(set_of)
    first = torch.full_like(sizes, n).scatter_reduce_(0, set_of, torch.arange(n, device=dev), "amin")
    set_class = class_of[first]
    if not torch.equal(set_class[set_of], class_of):
        bad = int(set_ids[int((set_class[set_of] != class_of).nonzero()[0, 0])])
        raise ValueError(f"set {bad} holds images of different classes; a set must lie within one class")
    keep = sizes >= 3
    n_kept = int(keep.sum())
    row_set = torch.where(keep[set_of], (torch.cumsum(keep.long(), 0) - 1)[set_of], -1)  # -1: skipped set
    kept_sizes = sizes[keep].double()[:, None]
    kept_class = set_class[keep]

    # (D, N): each neuron's values contiguous. One full transpose is several times cheaper than transposing
    # column blocks (strided reads), at the price of one copy of the features.
    features_t = features.T.contiguous()
    invariance = torch.empty(n_classes, d, dtype=torch.float64, device=dev)
    for start in range(0, d, block):
        xt = features_t[start : start + block]
        b = xt.shape[0]
        t_pos, cols, rows, vals = _tail(xt, top, True, sample)
        t = t_pos[cols]
        g = torch.bincount(cols, weights=(vals >= t).double(), minlength=b) / n
        f_pos = _set_counts(row_set[rows], cols, vals > t, n_kept, b)
        t_neg, cols, rows, vals = _tail(xt, top, False, sample)
        f_neg = _set_counts(row_set[rows], cols, vals < t_neg[cols], n_kept, b)
        f = torch.maximum(f_pos, f_neg)
        local = torch.zeros(n_classes, b, dtype=torch.float64, device=dev)
        count = torch.zeros_like(local)
        local.index_add_(0, kept_class, f / kept_sizes)  # f = 0 adds nothing, so only fired sets count
        count.index_add_(0, kept_class, (f > 0).double())
        invariance[:, start : start + b] = local / (count + 1e-20) / g
    return {int(k): float(invariance.topk(k, dim=1).values.mean(dim=1).mean() * (100 - p)) for k in ks}


def _set_counts(sets: Tensor, cols: Tensor, fires: Tensor, n_sets: int, b: int) -> Tensor:
    """``(n_sets, b)`` float64: how many images of each kept set fire on each neuron, from candidate entries
    (their set, ``-1`` when skipped, their neuron, and whether they fire). Weights instead of boolean
    indexing: one pass, no compaction."""
    weights = (fires & (sets >= 0)).double()
    return torch.bincount(sets.clamp(min=0) * b + cols, weights=weights, minlength=n_sets * b)[
        : n_sets * b
    ].view(n_sets, b)


# ------------------------------------------------------------------------------------------------ factor probes


def azimuth_bins(azimuth: Tensor, n_bins: int = 8) -> Tensor:
    """Bin of an azimuth in degrees: ``⌊(a mod 360) / (360 / n_bins)⌋`` in ``[0, n_bins)``; the default 8 bins
    are 45° wide, bin 0 is ``[0°, 45°)``."""
    width = 360.0 / n_bins
    return torch.floor(torch.remainder(azimuth.double(), 360.0) / width).long().clamp(0, n_bins - 1)


def elevation_bins(elevation: Tensor, width: float = 15.0) -> Tensor:
    """Bin of an elevation in degrees: ``⌊(clamp(e, −90, 90) + 90) / width⌋``, in ``[0, 180 / width)``; bins
    are numbered from −90° (default: 12 bins of 15°; the world's camera elevations 5–40° fall in bins 6–8)."""
    n_bins = math.ceil(180.0 / width)
    return torch.floor((elevation.double().clamp(-90.0, 90.0) + 90.0) / width).long().clamp(0, n_bins - 1)


def light_direction_bins(
    light_azimuth: Tensor, light_elevation: Tensor, n_azimuth: int = 8, elevation_width: float = 30.0
) -> Tensor:
    """Joint bin of a light direction: ``azimuth_bins(az, n_azimuth) · n_el + elevation_bins(el, width)``,
    ``n_el = ⌈180 / width⌉`` (default 8 x 6 = 48 bins of 45° x 30°; the world's light elevations 20–80° use
    3 of the 6 elevation bins)."""
    n_el = math.ceil(180.0 / elevation_width)
    return azimuth_bins(light_azimuth, n_azimuth) * n_el + elevation_bins(light_elevation, elevation_width)


def _group_split(groups: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Whole groups to test: ``max(1, round(test_fraction · #groups))`` random groups (at most all but one)."""
    uniq, inverse = torch.unique(groups.cpu(), return_inverse=True)
    if len(uniq) < 2:
        raise ValueError("groups has a single value: need at least two groups to split into train and test")
    g = torch.Generator().manual_seed(seed)
    n_test = min(max(1, round(test_fraction * len(uniq))), len(uniq) - 1)
    is_test = torch.zeros(len(uniq), dtype=torch.bool)
    is_test[torch.randperm(len(uniq), generator=g)[:n_test]] = True
    mask = is_test[inverse]
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


def factor_probe(
    features: Tensor,
    factor: Tensor,
    groups: Tensor | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
    max_iter: int = 500,
) -> dict[str, float]:
    """How well a linear probe (:func:`invarlab.eval.linear.linear_probe`) decodes a discrete ``factor`` ``(N,)``
    (integer values, e.g. from :func:`azimuth_bins`) from ``features`` ``(N, D)``.

    Split: with ``groups`` (e.g. instance ids) whole groups go to test, so the probe cannot answer by
    recognising an instance it saw in training; otherwise a stratified ``test_fraction`` of every value.
    Returns ``{"top1": %, "chance": %, "num_values": V, "weight_decay": λ, "n_train", "n_test"}``; ``chance``
    is the majority value's share of the test set (the best any constant guess scores).
    """
    if features.ndim != 2 or factor.shape != (features.shape[0],):
        raise ValueError(
            f"features must be (N, D) and factor (N,), got {tuple(features.shape)} and {tuple(factor.shape)}"
        )
    if factor.dtype.is_floating_point:
        raise ValueError("factor must hold integer values: bin continuous factors first (azimuth_bins, ...)")
    values, labels = torch.unique(factor.cpu(), return_inverse=True)
    if len(values) < 2:
        raise ValueError("factor takes a single value: there is nothing to decode")
    if groups is not None:
        if groups.shape != factor.shape:
            raise ValueError(f"groups must be ({len(factor)},) like factor, got {tuple(groups.shape)}")
        tr, te = _group_split(groups, test_fraction, seed)
    else:
        tr, te = stratified_split(labels, test_fraction, seed)
    feats = features.cpu()
    out = linear_probe(
        feats[tr],
        labels[tr],
        feats[te],
        labels[te],
        weight_decays,
        seed=seed,
        num_classes=len(values),
        max_iter=max_iter,
    )
    chance = float(torch.bincount(labels[te], minlength=len(values)).max() / len(te) * 100)
    return {
        "top1": out["top1"],
        "chance": chance,
        "num_values": len(values),
        "weight_decay": out["weight_decay"],
        "n_train": len(tr),
        "n_test": len(te),
    }
