"""Batched image ops with one parameter per sample.

Every op is a pure function of float images ``(B, 3, H, W)`` in ``[0, 1]`` and per-sample parameter tensors of
shape ``(B,)`` (a Python scalar is broadcast to the batch). The ops follow the documented semantics of
torchvision's ``transforms.v2.functional`` on float tensors, so a recipe built from them matches the usual
per-sample PIL/torchvision pipelines; ``tests/test_views.py`` measures the difference op by op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# ITU-R 601-2 luma, as PIL's ``convert("L")`` (torchvision uses 0.2989 for red; the difference is < 0.03 / 255).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``uint8`` images to floats in ``[0, 1]``: ``x / 255``; float images are only cast to ``dtype``."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    if images.is_floating_point():
        return images.to(dtype)
    raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")


def _per_sample(value: float | Tensor, images: Tensor) -> Tensor:
    """A scalar or a ``(B,)`` tensor as ``(B, 1, 1, 1)`` in the images' dtype and device, ready to broadcast."""
    t = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if t.ndim == 0:
        t = t.expand(images.shape[0])
    if t.shape != (images.shape[0],):
        raise ValueError(
            f"expected a scalar or one value per sample ({images.shape[0]},), got {tuple(t.shape)}"
        )
    return t.reshape(-1, 1, 1, 1)


def _mask(mask: Tensor | None, images: Tensor) -> Tensor | None:
    if mask is None:
        return None
    return torch.as_tensor(mask, dtype=torch.bool, device=images.device).reshape(-1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------- geometry


def _tri(x: Tensor) -> Tensor:
    """The bilinear (triangle) filter ``max(0, 1 - |x|)``."""
    return (1.0 - x.abs()).clamp_(min=0.0)


def _resample_matrix(
    start: Tensor, length: Tensor, in_size: int, out_size: int, antialias: bool, dtype: torch.dtype
) -> Tensor:
    """``(B, out_size, in_size)`` weights that crop ``[start, start + length)`` and resize it to ``out_size``.

    Output pixel ``i`` has its centre at ``c_i = (i + 1/2) s`` in crop coordinates, ``s = length / out_size``.
    Crop pixel ``j`` (centre ``j + 1/2``) gets the weight ``tri((j + 1/2 - c_i) / S)``, with ``S = max(s, 1)``
    when antialiasing (the triangle widened to the downscale factor, as PIL and torch's antialiased bilinear
    do) and ``S = 1`` otherwise (plain bilinear, ``align_corners=False``), normalised over the crop's pixels.
    Normalising over the crop alone reproduces the edge clamp of bilinear interpolation; crop pixels outside
    the image read as zero (torchvision's ``crop`` pads with zeros), so they count in the normaliser only.
    """
    device = start.device
    start, length = start.to(dtype), length.to(dtype)
    scale = length / out_size
    inv_support = 1.0 / (scale.clamp(min=1.0) if antialias else torch.ones_like(scale))
    centre = (torch.arange(out_size, dtype=dtype, device=device) + 0.5)[None, :] * scale[:, None]  # (B, out)
    # Weights over an extended pixel range that covers the image and every crop, so that crop pixels outside the
    # image count in the normaliser; one host sync reads the range.
    lo = min(0, int(start.min().item()))
    hi = max(in_size, int((start + length).max().item()))
    p = torch.arange(lo, hi, dtype=dtype, device=device)[None, :] - start[:, None] + 0.5  # crop coordinate
    inside = ((p > 0) & (p < length[:, None])).to(dtype)  # (B, n)
    w = _tri((p[:, None, :] - centre[:, :, None]) * inv_support[:, None, None]) * inside[:, None, :]
    w = w / w.sum(-1, keepdim=True)
    return w[:, :, -lo : -lo + in_size]


def _separable(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``out[b, c] = rows[b] @ images[b, c] @ cols[b]^T`` as two batched matmuls."""
    b, c, h, w = images.shape
    t = torch.bmm(images.reshape(b, c * h, w), cols.transpose(1, 2))  # (B, C H, ow): no copy of the images
    t = t.reshape(b * c, h, cols.shape[1])
    # Repeating the small row matrix per channel is cheaper than moving the channels of the image batch.
    return torch.bmm(rows.repeat_interleave(c, dim=0), t).reshape(b, c, rows.shape[1], cols.shape[1])


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: int | Sequence[int],
    antialias: bool = True,
    flip: Tensor | None = None,
) -> Tensor:
    """Crop each image to its box and resize it to ``size`` with bilinear interpolation.

    ``boxes`` is ``(B, 4)`` as ``(top, left, height, width)`` in input pixels (torchvision's ``i, j, h, w``),
    rounded to integers; parts of a box outside the image read as zero. Semantics are torchvision's
    ``resized_crop(..., BILINEAR, antialias)``. Because both axes are linear maps, the op is
    ``out_b = R_b X_b C_b^T`` with ``R_b`` (rows) and ``C_b`` (columns) from :func:`_resample_matrix`, one
    batched matmul per axis for the whole batch. ``flip`` (``(B,)`` bool) mirrors the columns of ``C_b``,
    giving a horizontal flip of the output for free.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    _, _, height, width = images.shape
    boxes = torch.as_tensor(boxes, device=images.device).to(torch.float32).round()
    if boxes.ndim != 2 or boxes.shape != (images.shape[0], 4):
        raise ValueError(f"boxes must be (B, 4) = (top, left, height, width), got {tuple(boxes.shape)}")
    if bool((boxes[:, 2:] < 1).any()):
        raise ValueError("every box needs a height and width of at least one pixel")
    rows = _resample_matrix(boxes[:, 0], boxes[:, 2], height, out_h, antialias, images.dtype)
    cols = _resample_matrix(boxes[:, 1], boxes[:, 3], width, out_w, antialias, images.dtype)
    if flip is not None:
        cols = torch.where(_mask(flip, images)[:, :, :, 0], cols.flip(1), cols)
    return _separable(images, rows, cols)


def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror left-right the samples where ``mask`` is true (all of them when ``mask`` is None)."""
    flipped = images.flip(-1)
    m = _mask(mask, images)
    return flipped if m is None else torch.where(m, flipped, images)


def rot90(images: Tensor, k: Tensor | int) -> Tensor:
    """Rotate sample ``b`` by ``k_b`` quarter turns counter-clockwise (torchvision ``rotate(img, 90 k)``).

    Odd ``k`` needs square images, since the batch keeps one shape.
    """
    k = torch.as_tensor(k, device=images.device).long().remainder(4)
    if k.ndim == 0:
        return torch.rot90(images, int(k), dims=(-2, -1))
    if images.shape[-1] != images.shape[-2] and bool((k % 2 == 1).any()):
        raise ValueError(f"odd quarter turns need square images, got {tuple(images.shape[-2:])}")
    out = images.clone()
    for turns in (1, 2, 3):  # a loop over the 3 rotations, each on its own subset of the batch
        idx = torch.nonzero(k == turns).squeeze(1)
        if idx.numel():
            out[idx] = torch.rot90(images[idx], turns, dims=(-2, -1))
    return out


# ----------------------------------------------------------------------------------------------------- colour


def rgb_to_gray(images: Tensor) -> Tensor:
    """Luma ``L = 0.299 R + 0.587 G + 0.114 B`` as ``(B, 1, H, W)``."""
    r, g, b = images.unbind(-3)
    gray = r * GRAY_WEIGHTS[0]
    return gray.add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def grayscale(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Three-channel grayscale ``(L, L, L)`` of the samples where ``mask`` is true (all when None)."""
    gray = rgb_to_gray(images).expand_as(images)
    m = _mask(mask, images)
    return gray.contiguous() if m is None else torch.where(m, gray, images)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f x + (1 - f) y, 0, 1)``: torchvision's blend for float images, as ``y + f (x - y)``."""
    return _blend_(images.clone(), other, factor)


def _blend_(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """:func:`_blend` in place on ``images`` (on CPU, fresh large outputs cost as much as the arithmetic)."""
    return images.sub_(other).mul_(factor).add_(other).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: float | Tensor) -> Tensor:
    """``clamp(f x, 0, 1)`` per sample."""
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: float | Tensor) -> Tensor:
    """``clamp(f x + (1 - f) m, 0, 1)`` with ``m`` the mean luma of each image."""
    mean = rgb_to_gray(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: float | Tensor) -> Tensor:
    """``clamp(f x + (1 - f) L, 0, 1)`` with ``L`` the per-pixel luma."""
    return _blend(images, rgb_to_gray(images), _per_sample(factor, images))


def adjust_hue(images: Tensor, factor: float | Tensor) -> Tensor:
    """Rotate the hue by ``factor`` turns (``factor`` in ``[-0.5, 0.5]``), keeping HSV saturation and value.

    RGB to HSV (hexcone), hue in sextants ``h in [0, 6)``, with ``V = max``, ``m = min``, chroma ``C = V - m``:
    ``h = (G - B) / C mod 6`` if ``V = R``, ``(B - R) / C + 2`` if ``V = G``, else ``(R - G) / C + 4``
    (``h = 0`` when ``C = 0``). Shift ``h' = h + 6 f``. Back to RGB: channel ``n`` (5 for R, 3 for G, 1 for B)
    is ``V - C clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h') mod 6``, since ``V S = C``; on ``[0, 6)`` that
    equals ``m + C clamp(|k - 2| - 1, 0, 1)``, which is what is computed.
    """
    return _adjust_hue_(images.clone(), factor)


def _adjust_hue_(images: Tensor, factor: float | Tensor) -> Tensor:
    """:func:`adjust_hue` writing into ``images``: on CPU, fresh large outputs cost as much as the arithmetic."""
    r, g, b = images.unbind(-3)
    value = images.amax(-3)
    low = images.amin(-3)
    chroma = value - low
    is_r, is_g = value == r, value == g
    numerator = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    # Grey pixels have numerator 0 and C = 0: any hue gives V, so the clamp only avoids 0 / 0. The hue stays
    # unwrapped here; the single remainder below wraps it together with the channel offset.
    hue = (
        numerator.div_(chroma.clamp(min=1e-12)).add_(offset).add_(6.0 * _per_sample(factor, images)[:, :, 0])
    )
    sextant = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
    k = images.copy_(hue[:, None].expand_as(images)).add_(sextant).remainder_(6.0)
    # m + C clamp(|k - 2| - 1, 0, 1) lies in [min, max] of the input pixel, so no clamp is needed.
    return k.sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0).mul_(chroma[:, None]).add_(low[:, None])


# The four ColorJitter ops in torchvision's index order: the jitter order in parameters refers to these.
JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor, applied: Tensor | None = None) -> Tensor:
    """torchvision ``ColorJitter`` with per-sample factors and order.

    ``factors`` is ``(B, 4)``: brightness, contrast, saturation, hue; ``order`` is ``(B, 4)``, the op indices
    (into :data:`JITTER_OPS`) in the order sample ``b`` applies them. Samples with ``applied`` false, and ops
    whose factor is the identity (1, 1, 1, 0: a disabled jitter component), are left untouched.

    Brightness, contrast and saturation are all blends ``clamp(f x + (1 - f) y, 0, 1)`` with ``y = 0``, the
    mean luma or the pixel luma, so each of the 4 steps does one blend over the whole batch, with ``y`` and
    ``f`` picked per sample (``f = 1`` leaves a sample exact). Hue runs on the subset that takes it at a step.
    """
    factors = factors.to(device=images.device, dtype=images.dtype)
    order = order.to(images.device)
    active = factors != torch.tensor(JITTER_IDENTITY, dtype=images.dtype, device=images.device)
    if applied is not None:
        active &= torch.as_tensor(applied, dtype=torch.bool, device=images.device)[:, None]
    out = images.clone()  # then every step works in place on this copy
    for position in range(4):
        op = order[:, position]
        on = active.gather(1, op[:, None]).squeeze(1)
        blend = on & (op < 3)
        if bool(blend.any()):
            f = torch.where(blend, factors.gather(1, op[:, None]).squeeze(1), 1.0).reshape(-1, 1, 1, 1)
            gray = rgb_to_gray(out)
            # y = gray [saturation] + mean(gray) [contrast] + 0 [brightness], one fused op
            use_pixel = (op == 2).to(images.dtype).reshape(-1, 1, 1, 1)
            mean = gray.mean(dim=(-3, -2, -1), keepdim=True) * (op == 1).to(images.dtype).reshape(-1, 1, 1, 1)
            out = _blend_(out, torch.addcmul(mean, gray, use_pixel), f)
        idx = torch.nonzero(on & (op == 3)).squeeze(1)
        if idx.numel():
            out[idx] = _adjust_hue_(out[idx], factors[idx, 3])  # out[idx] is a copy: in place is safe
    return out


# ----------------------------------------------------------------------------------------------------- filters


def gaussian_kernel_size(sigma_max: float, truncate: float = 3.0) -> int:
    """Odd kernel size ``2 ceil(truncate sigma_max) + 1``: the Gaussian cut at ``truncate`` standard deviations.

    At 3 sigma the kernel holds 99.7% of the mass, the closest truncation to PIL's ``GaussianBlur(radius=sigma)``
    (MoCo v2's blur, a repeated box filter with unbounded support) that stays cheap.
    """
    return 2 * math.ceil(truncate * sigma_max) + 1


def _blur_matrix(sigma: Tensor, kernel_size: int, n: int, dtype: torch.dtype) -> Tensor:
    """``(B, n, n)`` matrix of a 1-D Gaussian blur with reflect padding (edge pixel not repeated).

    ``M[b, i, reflect(i + t)] += g_b(t)`` for ``t in [-r, r]``, ``r = kernel_size // 2``, with
    ``g_b(t) = exp(-t^2 / (2 sigma_b^2)) / sum_t exp(-t^2 / (2 sigma_b^2))`` and ``reflect(m) = -m`` below 0,
    ``2 (n - 1) - m`` above ``n - 1``.
    """
    radius = kernel_size // 2
    device = sigma.device
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t[None, :] / sigma.to(dtype)[:, None]) ** 2)
    kernel = kernel / kernel.sum(-1, keepdim=True)  # (B, k)
    src = torch.arange(n, device=device)[:, None] + torch.arange(-radius, radius + 1, device=device)[None, :]
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)  # (n, k)
    matrix = torch.zeros(sigma.shape[0], n, n, dtype=dtype, device=device)
    index = src[None].expand(sigma.shape[0], n, kernel_size)
    return matrix.scatter_add_(2, index, kernel[:, None, :].expand(-1, n, -1))


def gaussian_blur(images: Tensor, sigma: float | Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur, per-sample ``sigma``, odd ``kernel_size``, reflect padding (torchvision's).

    ``out_b = B_b X_b B'_b^T`` with the row and column blur matrices of :func:`_blur_matrix`: the padding is
    folded into the matrices, so the blur is two batched matmuls.
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    _, _, height, width = images.shape
    if kernel_size // 2 >= min(height, width):
        raise ValueError(
            f"kernel_size {kernel_size} too large for reflect padding of {height}x{width} images"
        )
    sigma_t = _per_sample(sigma, images).reshape(-1)
    rows = _blur_matrix(sigma_t, kernel_size, height, images.dtype)
    cols = rows if width == height else _blur_matrix(sigma_t, kernel_size, width, images.dtype)
    return _separable(images, rows, cols)


def solarize(images: Tensor, threshold: float | Tensor, mask: Tensor | None = None) -> Tensor:
    """``1 - x`` where ``x >= threshold``, else ``x``; only samples where ``mask`` is true (all when None)."""
    out = torch.where(images >= _per_sample(threshold, images), 1.0 - images, images)
    m = _mask(mask, images)
    return out if m is None else torch.where(m, out, images)


def normalize(
    images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Per channel ``(x - mean_c) / std_c``."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)
    return (images - m) / s


__all__ = [
    "GRAY_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JITTER_IDENTITY",
    "JITTER_OPS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "gaussian_blur",
    "gaussian_kernel_size",
    "grayscale",
    "hflip",
    "normalize",
    "resized_crop",
    "rgb_to_gray",
    "rot90",
    "solarize",
    "to_float",
]
