"""AutoAugment's ImageNet policy (Cubuk et al. 2019) on batches, one sub-policy per sample (PAPERS.md §2.2.3).

Per sample: a sub-policy drawn uniformly from the 25; each of its two ops runs when its own coin ``u <= p``
comes up; a signed op's magnitude is negated when its sign bit is 0. Magnitudes come from 10 bins
(:data:`MAGNITUDES`). The draw is torchvision's ``AutoAugment.get_params`` per sample, and the ops are
:mod:`invarlab.views.aa_ops`, with torchvision's tensor semantics on ``uint8`` levels.

Batched: samples are grouped by op, so each op runs once per slot on the samples that drew it (at most 2 x 10
op calls for the ImageNet policy, whatever the batch size).

P2 picks AutoAugment or the MoCo v2 photometric pipeline 50/50 for the query crop and every small crop, never
for the key; with AutoAugment the crop goes ``crop → flip → AutoAugment → normalise`` (``T_AA``). That choice is
:attr:`AutoAugmentParams.enabled`; :mod:`invarlab.views.multicrop` wires it into the views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from invarlab.views.aa_ops import OP_NAMES, OPS
from invarlab.views.params import bernoulli

NUM_BINS = 10

# (op, probability, magnitude bin or None) x 2, the ImageNet policy of the AutoAugment paper (Appendix, Table 9).
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

# Ops whose magnitude takes a random sign.
SIGNED = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
)


def _linspace(start: float, end: float) -> list[float]:
    # float32 bins, read back as Python floats: the values torchvision's tables hold.
    return [float(v) for v in torch.linspace(start, end, NUM_BINS)]


def magnitude_bins(op: str, size: tuple[int, int]) -> list[float]:
    """The 10 unsigned magnitudes of ``op`` for ``size = (H, W)`` views (PAPERS.md §2.2.3):

    shear 0..0.3, translate 0..150/331 of the side (pixels), rotate 0..30 degrees, brightness / colour /
    contrast / sharpness 0..0.9 (applied as ``1 ± m``), posterize ``8 - round(bin / 2.25)`` bits
    ``[8, 8, 7, 7, 6, 6, 5, 5, 4, 4]``, solarize threshold from 255 down to 0 levels. Ops without a magnitude
    (AutoContrast, Equalize, Invert) give zeros.
    """
    h, w = size
    if op in ("ShearX", "ShearY"):
        return _linspace(0.0, 0.3)
    if op == "TranslateX":
        return _linspace(0.0, 150.0 / 331.0 * w)
    if op == "TranslateY":
        return _linspace(0.0, 150.0 / 331.0 * h)
    if op == "Rotate":
        return _linspace(0.0, 30.0)
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return _linspace(0.0, 0.9)
    if op == "Posterize":
        return [float(8 - round(b / ((NUM_BINS - 1) / 4))) for b in range(NUM_BINS)]
    if op == "Solarize":
        return _linspace(255.0, 0.0)
    if op in ("AutoContrast", "Equalize", "Invert"):
        return [0.0] * NUM_BINS
    raise ValueError(f"unknown AutoAugment op {op!r}: use one of {', '.join(OP_NAMES)}")


@dataclass(frozen=True)
class AutoAugmentParams:
    """One AutoAugment draw per sample. ``magnitude`` is signed and in the op's unit (float64)."""

    enabled: Tensor  # (B,) bool: AutoAugment replaces the photometric recipe for this sample
    policy: Tensor  # (B,) long: sub-policy index
    op: Tensor  # (B, 2) long: indices into aa_ops.OP_NAMES
    magnitude: Tensor  # (B, 2) float64
    applied: Tensor  # (B, 2) bool: the op's own coin came up
    size: tuple[int, int]  # the (H, W) the magnitudes were drawn for (translations are in pixels)

    @property
    def batch_size(self) -> int:
        return int(self.enabled.shape[0])

    def _map(self, fn) -> AutoAugmentParams:  # type: ignore[no-untyped-def]
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "size"})

    def to(self, device: torch.device | str) -> AutoAugmentParams:
        return self._map(lambda t: t.to(device))

    def select(self, index: Tensor | slice) -> AutoAugmentParams:
        """The draws of a subset of samples (a slice, an index tensor or a boolean mask)."""
        return self._map(lambda t: t[index.to(t.device) if isinstance(index, Tensor) else index])


def sample_autoaugment(
    n: int,
    size: int | tuple[int, int],
    p: float,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    policy: Sequence = IMAGENET_POLICY,
) -> AutoAugmentParams:
    """Draw ``n`` AutoAugment parameter sets for views of ``size``; each sample is enabled with probability
    ``p`` (P2's ``RandomChoice([T_AA, T_MoCo])``: 0.5).

    Per sample, in this order and always all of them: the enable coin, the sub-policy ``~ U{0..24}``, two op
    coins ``u ~ U[0, 1)`` (the op runs when ``u <= p_op``) and two sign bits (``0`` negates a signed op).
    """
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    gdev = generator.device if generator is not None else torch.device("cpu")
    enabled = bernoulli(n, p, generator, gdev)
    pick = torch.randint(len(policy), (n,), generator=generator, device=gdev)
    coins = torch.rand(n, 2, generator=generator, device=gdev)
    signs = torch.randint(2, (n, 2), generator=generator, device=gdev)
    # Small lookup tables over the policy: op index, probability and signed-ness of each slot.
    op_table = torch.tensor([[OP_NAMES.index(s[0]) for s in sub] for sub in policy], device=gdev)
    prob_table = torch.tensor([[s[1] for s in sub] for sub in policy], dtype=torch.float64, device=gdev)
    mag_table = torch.tensor(
        [[magnitude_bins(s[0], size)[s[2] or 0] for s in sub] for sub in policy],
        dtype=torch.float64,
        device=gdev,
    )
    signed = torch.tensor([[s[0] in SIGNED for s in sub] for sub in policy], device=gdev)
    negate = signed[pick] & (signs == 0)
    magnitude = torch.where(negate, -mag_table[pick], mag_table[pick])
    dev = device or gdev
    return AutoAugmentParams(
        enabled=enabled.to(dev),
        policy=pick.to(dev),
        op=op_table[pick].to(dev),
        magnitude=magnitude.to(dev),
        applied=(coins.double() <= prob_table[pick]).to(dev),
        size=size,
    )


def autoaugment_levels(levels: Tensor, params: AutoAugmentParams) -> Tensor:
    """Apply the drawn ops to the enabled samples of ``levels`` (float ``(B, 3, H, W)``, integer values in
    ``[0, 255]``); other samples are returned unchanged."""
    if params.batch_size != levels.shape[0]:
        raise ValueError(f"{params.batch_size} AutoAugment draws for {levels.shape[0]} images")
    if tuple(levels.shape[-2:]) != params.size:
        raise ValueError(f"AutoAugment drawn for {params.size} views, got {tuple(levels.shape[-2:])}")
    p = params.to(levels.device)
    out = levels.clone()
    for slot in range(2):
        runs = p.enabled & p.applied[:, slot]
        if not bool(runs.any()):
            continue
        ops = p.op[:, slot]
        for op_id in torch.unique(ops[runs]).tolist():
            idx = torch.nonzero(runs & (ops == op_id)).squeeze(1)
            out[idx] = OPS[OP_NAMES[op_id]](out[idx], p.magnitude[idx, slot])
    return out


def autoaugment(images: Tensor, params: AutoAugmentParams) -> Tensor:
    """AutoAugment on float views in ``[0, 1]``: ``round(255 x)`` (the ``uint8`` crop P2 feeds it), the ops,
    then ``/ 255``. Samples that are not enabled are returned exactly as they came."""
    idx = torch.nonzero(params.enabled.to(images.device)).squeeze(1)
    out = images.clone()
    if idx.numel():
        levels = images[idx].mul(255.0).round_().clamp_(0.0, 255.0)
        out[idx] = autoaugment_levels(levels, params.select(idx)).div_(255.0)
    return out


__all__ = [
    "IMAGENET_POLICY",
    "NUM_BINS",
    "SIGNED",
    "AutoAugmentParams",
    "autoaugment",
    "autoaugment_levels",
    "magnitude_bins",
    "sample_autoaugment",
]
