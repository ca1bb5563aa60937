"""AutoAugment's 14 image ops, batched, one magnitude per sample, with ``uint8`` semantics.

P2 applies AutoAugment to ``uint8`` PIL crops (PAPERS.md §2.2.3), so these ops work on **levels**: float
images ``(B, 3, H, W)`` whose values are integers in ``[0, 255]``, and they return levels again, rounding as
torchvision's ``transforms.v2.functional`` does on ``uint8`` tensors (a blend is truncated, a blur rounded).
:func:`invarlab.views.autoaugment.autoaugment` converts a ``[0, 1]`` view to levels and back.

Magnitudes are in each op's own unit, signed where the op is signed (PAPERS.md §2.2.3 and
:data:`invarlab.views.autoaugment.MAGNITUDES`): a shear factor, a translation in pixels, an angle in degrees,
an enhancement offset ``m`` applied as the factor ``1 + m``, a number of bits, a threshold in levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's tensor luma weights (its uint8 ops floor the luma before they use it).
TV_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _col(values: Tensor, images: Tensor) -> Tensor:
    """``(B,)`` as ``(B, 1, 1, 1)`` in the images' dtype and device."""
    return values.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1)


def _gray(images: Tensor) -> Tensor:
    """``floor(0.2989 R + 0.587 G + 0.114 B)`` as ``(B, 1, H, W)``: torchvision's luma of a ``uint8`` image."""
    r, g, b = images.unbind(-3)
    w = TV_GRAY_WEIGHTS
    return r.mul(w[0]).add_(g, alpha=w[1]).add_(b, alpha=w[2]).floor_().unsqueeze(-3)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``floor(clamp(f x + (1 - f) y, 0, 255))`` with ``f = factor`` per sample (float64 in, so that ``1 - f``
    is rounded once, as torchvision's Python-float arithmetic does)."""
    f = factor.double()
    # addcmul, like torchvision's add_(y, alpha=1 - f), rounds once (fused): the floor then agrees.
    out = torch.addcmul(images * _col(f, images), other, _col(1.0 - f, images))
    return out.clamp_(0.0, 255.0).floor_()


# ----------------------------------------------------------------------------------------------------- geometry


def affine_nearest(images: Tensor, inverse: Tensor) -> Tensor:
    """Warp each image by its inverse affine map with nearest-neighbour sampling and a zero fill.

    ``inverse`` ``(B, 2, 3)`` maps an output pixel centre ``(x, y)``, measured from the image centre (``x = j +
    1/2 - W/2``, ``y = i + 1/2 - H/2``, y down), to the source point ``(a x + b y + c, d x + e y + f)`` in the
    same coordinates. The source pixel is the nearest one (``grid_sample``, ``align_corners=False``); points
    outside the image read 0, the fill of torchvision's AutoAugment.
    """
    b, _, h, w = images.shape
    dtype, device = images.dtype, images.device
    half = torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64, device=device)
    # Scale the map to grid_sample's [-1, 1] coordinates first, then apply it: the order torchvision uses,
    # so that the grids agree to the last bit and ties round the same way.
    theta = (inverse.to(device=device, dtype=torch.float64) / half[None, :, None]).to(dtype)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=device, dtype=dtype)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=device, dtype=dtype)
    base = torch.stack(
        [xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=dtype, device=device)]
    )
    grid = torch.bmm(base.reshape(1, 3, h * w).transpose(1, 2).expand(b, -1, -1), theta.transpose(1, 2))
    return F.grid_sample(
        images, grid.reshape(b, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False
    )


def shear_x(images: Tensor, m: Tensor) -> Tensor:
    """``out(u, v) = in(u + m v, v)`` in corner coordinates (TF AutoAugment's ``(1, m, 0, 0, 1, 0)``):
    torchvision's shear of ``atan(m)`` about the top-left corner."""
    m = m.double()
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    h = images.shape[-2]
    inverse = torch.stack([torch.stack([one, m, m * h / 2]), torch.stack([zero, one, zero])]).permute(2, 0, 1)
    return affine_nearest(images, inverse)


def shear_y(images: Tensor, m: Tensor) -> Tensor:
    """``out(u, v) = in(u, v + m u)``: :func:`shear_x` with the axes swapped."""
    m = m.double()
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    w = images.shape[-1]
    inverse = torch.stack([torch.stack([one, zero, zero]), torch.stack([m, one, m * w / 2])]).permute(2, 0, 1)
    return affine_nearest(images, inverse)


def _translate(images: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    inverse = torch.stack([torch.stack([one, zero, -tx]), torch.stack([zero, one, -ty])]).permute(2, 0, 1)
    return affine_nearest(images, inverse)


def translate_x(images: Tensor, pixels: Tensor) -> Tensor:
    """``out(u, v) = in(u - t, v)`` with ``t`` truncated to an integer (positive ``t`` moves content right)."""
    t = pixels.double().trunc()
    return _translate(images, t, torch.zeros_like(t))


def translate_y(images: Tensor, pixels: Tensor) -> Tensor:
    """``out(u, v) = in(u, v - t)``, ``t`` truncated to an integer (positive ``t`` moves content down)."""
    t = pixels.double().trunc()
    return _translate(images, torch.zeros_like(t), t)


def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate counter-clockwise by ``θ`` degrees about the image centre, same size, zero fill: the source of
    output ``(x, y)`` is ``(x cos θ − y sin θ, x sin θ + y cos θ)`` (y down)."""
    t = torch.deg2rad(degrees.double())
    c, s = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(t)
    inverse = torch.stack([torch.stack([c, -s, zero]), torch.stack([s, c, zero])]).permute(2, 0, 1)
    return affine_nearest(images, inverse)


# ----------------------------------------------------------------------------------------------------- colour


def brightness(images: Tensor, m: Tensor) -> Tensor:
    """``floor(clamp((1 + m) x, 0, 255))``."""
    return _blend(images, torch.zeros_like(images), 1.0 + m.double())


def color(images: Tensor, m: Tensor) -> Tensor:
    """Saturation: blend with the floored per-pixel luma ``L``, factor ``1 + m``."""
    return _blend(images, _gray(images), 1.0 + m.double())


def contrast(images: Tensor, m: Tensor) -> Tensor:
    """Blend with the mean of the floored luma of each image, factor ``1 + m``."""
    mean = _gray(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, 1.0 + m.double())


def sharpness(images: Tensor, m: Tensor) -> Tensor:
    """Blend with a smoothed copy, factor ``f = 1 + m``, on the interior pixels (the 1-pixel border is kept).

    Smoothed = ``round(K * x)`` with ``K = [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` (PIL's SMOOTH filter); the
    interior becomes ``floor(clamp(x + (1 - f)(s - x), 0, 255))``.
    """
    _, c, h, w = images.shape
    if h <= 2 or w <= 2:
        return images.clone()
    kernel = torch.full((3, 3), 1.0 / 13.0, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    smooth = F.conv2d(images, kernel.expand(c, 1, 3, 3), groups=c).round_()
    out = images.clone()
    inner = out[..., 1:-1, 1:-1]
    one_minus_f = _col(1.0 - (1.0 + m.double()), images)
    inner.addcmul_(smooth.sub_(inner), one_minus_f)
    return out.clamp_(0.0, 255.0).floor_()


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` bits of each level: ``floor(x / 2^(8 - bits)) 2^(8 - bits)``."""
    step = _col(torch.pow(2.0, 8 - bits.double().round()), images)
    return torch.floor(images / step) * step


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """``255 - x`` where ``x >= threshold`` (in levels), else ``x``."""
    return torch.where(images >= _col(threshold.double(), images), 255.0 - images, images)


def autocontrast(images: Tensor, m: Tensor | None = None) -> Tensor:
    """Stretch each channel to ``[0, 255]``: ``floor(clamp((x - lo) / ((hi - lo) / 255), 0, 255))`` with ``lo``,
    ``hi`` the channel's minimum and maximum; a constant channel is left as it is. ``m`` is ignored."""
    lo = images.amin(dim=(-2, -1), keepdim=True)
    hi = images.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    scale = (hi - lo).mul_(1.0 / 255.0)
    lo = torch.where(flat, 0.0, lo)
    scale = torch.where(flat, 1.0, scale)
    return (images - lo).div_(scale).clamp_(0.0, 255.0).floor_()


def equalize(images: Tensor, m: Tensor | None = None) -> Tensor:
    """Histogram equalisation of each channel, PIL's rule. ``m`` is ignored.

    With ``h`` the channel's 256-bin histogram, ``N`` its pixel count, ``c_k = Σ_{i<k} h_i`` and
    ``step = floor((N − h_last) / 255)`` (``h_last`` the count of the highest level present), level ``k``
    maps to ``min(255, floor((c_k + floor(step / 2)) / step))``; a channel with ``step = 0`` (one level, or
    nearly) is left as it is.
    """
    b, c, h, w = images.shape
    levels = images.reshape(b * c, h * w).round().clamp(0, 255).long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    last = 255 - (hist.flip(-1) > 0).to(torch.uint8).argmax(dim=-1, keepdim=True)
    step = (h * w - hist.gather(1, last)) // 255  # (R, 1)
    below = torch.cumsum(hist, dim=1) - hist  # c_k: pixels strictly below level k
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    out = lut.gather(1, levels)
    out = torch.where(step > 0, out, levels)
    return out.to(images.dtype).reshape(b, c, h, w)


def invert(images: Tensor, m: Tensor | None = None) -> Tensor:
    """``255 - x``. ``m`` is ignored."""
    return 255.0 - images


# Op names as AutoAugment (and torchvision) spell them, and the function of each.
OPS = {
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Rotate": rotate,
    "Brightness": brightness,
    "Color": color,
    "Contrast": contrast,
    "Sharpness": sharpness,
    "Posterize": posterize,
    "Solarize": solarize,
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
}
OP_NAMES = tuple(OPS)

__all__ = [
    "OPS",
    "OP_NAMES",
    "affine_nearest",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "invert",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]
