"""Per-sample augmentation parameters: the record of one view, and batched samplers that draw them.

Every sampler takes an explicit ``torch.Generator`` and draws a fixed number of values per sample whatever the
outcome (all 10 crop tries, every jitter factor, a sigma even when no blur is applied), so the generator's state
after a call depends only on the batch size and the same seed gives the same parameters. Values are drawn on
the generator's device and then moved to ``device``: a CPU generator gives the same views on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class ViewParams:
    """Everything needed to rebuild a batch of views from the source images (see ``recipes.apply_view``).

    Tensors have one row per sample. Later methods read them: LooC shares some of them between views,
    constrained multi-crop and region tracking read ``boxes``.
    """

    boxes: Tensor  # (B, 4) float: top, left, height, width of the crop, in source pixels (integers)
    size: tuple[int, int]  # output height, width
    antialias: bool  # antialiased bilinear resize (torchvision v2's default)
    flip: Tensor  # (B,) bool: horizontal flip of the view
    jitter_applied: Tensor  # (B,) bool: the colour jitter ran for this sample
    jitter_factors: (
        Tensor  # (B, 4): brightness, contrast, saturation factors, hue shift (identity 1, 1, 1, 0)
    )
    jitter_order: Tensor  # (B, 4) long: indices into ops.JITTER_OPS, in the order they are applied
    grayscale: Tensor  # (B,) bool
    blur_applied: Tensor  # (B,) bool
    blur_sigma: Tensor  # (B,) float: Gaussian standard deviation in output pixels
    blur_kernel_size: int  # odd, one size for the batch
    solarize: Tensor  # (B,) bool
    solarize_threshold: float  # on the [0, 1] scale
    rotation: Tensor  # (B,) long: quarter turns counter-clockwise
    mean: tuple[float, ...] | None  # normalisation; None leaves views in [0, 1]
    std: tuple[float, ...] | None

    @property
    def batch_size(self) -> int:
        return int(self.boxes.shape[0])

    def _map(self, fn) -> ViewParams:  # type: ignore[no-untyped-def]
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))

    def select(self, index: Tensor | slice) -> ViewParams:
        """The parameters of a subset of samples (a slice, an index tensor or a boolean mask)."""
        return self._map(lambda t: t[index.to(t.device) if isinstance(index, Tensor) else index])

    @staticmethod
    def cat(params: Sequence[ViewParams]) -> ViewParams:
        """Concatenate along the batch; the scalar settings (size, kernel, normalisation) must agree."""
        first = params[0]
        for other in params[1:]:
            for f in fields(first):
                a, b = getattr(first, f.name), getattr(other, f.name)
                if not isinstance(a, Tensor) and a != b:
                    raise ValueError(
                        f"cannot concatenate view parameters with different {f.name}: {a} vs {b}"
                    )
        changes = {
            f.name: torch.cat([getattr(p, f.name) for p in params])
            for f in fields(first)
            if isinstance(getattr(first, f.name), Tensor)
        }
        return replace(first, **changes)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def uniform(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` draws from ``U[low, high)`` (float32)."""
    u = torch.rand(n, generator=generator, device=_gen_device(generator))
    return (low + (high - low) * u).to(device or u.device)


def bernoulli(
    n: int, p: float, generator: torch.Generator | None, device: torch.device | str | None = None
) -> Tensor:
    """``n`` booleans, each true with probability ``p`` (one uniform draw each, also when p is 0 or 1)."""
    u = torch.rand(n, generator=generator, device=_gen_device(generator))
    return (u < p).to(device or u.device)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    tries: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes ``(n, 4)`` = (top, left, height, width), as torchvision draws them.

    Each try draws an area fraction ``a ~ U[scale]`` and an aspect ratio ``r = exp(U[log ratio])``, giving
    ``w = round(sqrt(a H W r))``, ``h = round(sqrt(a H W / r))``. The first try with ``0 < w <= W`` and
    ``0 < h <= H`` wins, placed uniformly: ``top ~ U{0 .. H - h}``, ``left ~ U{0 .. W - w}``. If all tries fail,
    the fallback is the centre crop of the whole image clamped to the ratio range.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    gdev = _gen_device(generator)
    area = float(height * width)
    frac = scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator, device=gdev)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, device=gdev))
    place = torch.rand(n, 2, generator=generator, device=gdev)
    # float64 so that round() sees the same values as torchvision's Python floats (round half to even)
    w = torch.sqrt(area * frac.double() * aspect.double()).round()
    h = torch.sqrt(area * frac.double() / aspect.double()).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first valid try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    top = torch.floor(place[:, 0].double() * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(place[:, 1].double() * (width - w + 1)).clamp(max=width - w)

    # Centre-crop fallback: the whole image, cut down to the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64, device=gdev)
    boxes = torch.stack([top, left, h, w], dim=1)
    boxes = torch.where(ok.any(dim=1, keepdim=True), boxes, fallback)
    return boxes.float().to(device or gdev)


def jitter_factor_range(strength: float, centre: float = 1.0) -> tuple[float, float]:
    """torchvision's range for brightness, contrast, saturation: ``[max(0, 1 - x), 1 + x]``."""
    return max(0.0, centre - strength), centre + strength


def sample_jitter(
    n: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``RandomApply(ColorJitter(brightness, contrast, saturation, hue), p)`` parameters.

    Returns ``(applied (n,) bool, factors (n, 4), order (n, 4))``. Factors: brightness, contrast and saturation
    ``~ U[max(0, 1 - x), 1 + x]``, hue ``~ U[-h, h]``; a component set to 0 gets the identity (1 or 0), which
    the op skips as torchvision does. ``order`` is a uniform random permutation of the four ops per sample.
    """
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    gdev = _gen_device(generator)
    applied = torch.rand(n, generator=generator, device=gdev) < p
    u = torch.rand(n, 4, generator=generator, device=gdev)
    lows, highs = [], []
    for strength in (brightness, contrast, saturation):
        lo, hi = jitter_factor_range(strength) if strength > 0 else (1.0, 1.0)
        lows.append(lo)
        highs.append(hi)
    lows.append(-hue)
    highs.append(hue)
    lo_t = torch.tensor(lows, device=gdev)
    hi_t = torch.tensor(highs, device=gdev)
    factors = lo_t + (hi_t - lo_t) * u
    # argsort of i.i.d. uniforms is a uniform random permutation
    order = torch.argsort(torch.rand(n, 4, generator=generator, device=gdev), dim=1)
    dev = device or gdev
    return applied.to(dev), factors.to(dev), order.to(dev)


def sample_rotation(
    n: int,
    choices: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Quarter turns drawn uniformly from ``choices`` (e.g. ``(0, 1, 2, 3)`` for LooC's rotation)."""
    gdev = _gen_device(generator)
    pick = torch.randint(len(choices), (n,), generator=generator, device=gdev)
    return torch.tensor(list(choices), dtype=torch.long, device=gdev)[pick].to(device or gdev)


__all__ = [
    "ViewParams",
    "bernoulli",
    "jitter_factor_range",
    "sample_crop_boxes",
    "sample_jitter",
    "sample_rotation",
    "uniform",
]
