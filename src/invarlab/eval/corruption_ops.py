"""Image corruptions as batched pure functions with explicit parameters (ImageNet-C's formulas).

Every op takes float images ``(B, 3, H, W)`` in ``[0, 1]`` on any device and returns new images of the same shape
in ``[0, 1]``. Random ops draw from one ``torch.Generator`` on the generator's own device, in float32, and move the
draws to the images' device, so the result depends only on the generator's seed, not on the images' device or
dtype. Spatial parameters here are in pixels of the images they receive; :mod:`invarlab.eval.corruptions` holds
the severity table and scales it to the image size. Formulas are in the docstrings and in ``docs/corruptions.md``.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from invarlab.views.ops import gaussian_blur as _separable_gaussian_blur
from invarlab.views.ops import gaussian_kernel_size

# ----------------------------------------------------------------------------------------------------- randomness


def _rand(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """``U[0, 1)`` draws made on the generator's device in float32, then moved to ``like``'s device."""
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device)


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws, made like :func:`_rand`."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device)


# ----------------------------------------------------------------------------------------------------- noise


def gaussian_noise(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``clip(x + sigma n, 0, 1)``, ``n ~ N(0, 1)`` per element."""
    noise = _randn(tuple(images.shape), generator, images).to(images.dtype)
    return (images + sigma * noise).clamp_(0.0, 1.0)


def shot_noise(images: Tensor, photons: float, generator: torch.Generator) -> Tensor:
    """``clip(Poisson(lambda x) / lambda, 0, 1)`` per element: photon counting with ``lambda`` photons at white."""
    rates = (images.detach().to(device=generator.device, dtype=torch.float32) * photons).clamp_(min=0.0)
    counts = torch.poisson(rates, generator=generator)
    return (counts / photons).to(device=images.device, dtype=images.dtype).clamp_(0.0, 1.0)


def impulse_noise(images: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Salt and pepper: each element independently becomes 0 or 1 (equally likely) with probability ``amount``."""
    hit = _rand(tuple(images.shape), generator, images) < amount
    salt = _rand(tuple(images.shape), generator, images) < 0.5
    return torch.where(hit, salt.to(images.dtype), images)


# ----------------------------------------------------------------------------------------------------- filters


FFT_MIN_KERNEL = 15  # from this kernel size on, correlating through the FFT is faster on CPU


def filter2d(images: Tensor, kernels: Tensor) -> Tensor:
    """Correlate every channel with a 2-D kernel, reflect-101 padding (OpenCV's default border, scipy's mirror).

    ``out[b, c, y, x] = sum_{i, j} K_b[i, j] x[b, c, reflect(y + i - r), reflect(x + j - r)]`` for an odd square
    kernel of radius ``r``. ``kernels`` is ``(k, k)`` (one for the batch) or ``(B, k, k)`` (one per sample).
    Small kernels run as a (grouped) convolution, large ones through the FFT (:func:`_correlate_fft`).
    """
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    if kernels.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"kernels must be odd and square, got {tuple(kernels.shape)}")
    r = k // 2
    if r >= min(h, w):
        raise ValueError(f"kernel radius {r} too large for reflect padding of {h}x{w} images")
    if kernels.ndim == 3 and kernels.shape[0] != b:
        raise ValueError(f"expected one kernel per sample ({b}), got {kernels.shape[0]}")
    kernels = kernels.to(device=images.device, dtype=images.dtype)
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    if k >= FFT_MIN_KERNEL:
        return _correlate_fft(padded, kernels if kernels.ndim == 3 else kernels[None], h, w)
    if kernels.ndim == 2:
        return F.conv2d(padded, kernels.expand(c, 1, k, k), groups=c)
    # One group per (sample, channel): the per-sample kernels become a grouped convolution over B C channels.
    weight = kernels[:, None].expand(b, c, k, k).reshape(b * c, 1, k, k)
    return F.conv2d(padded.reshape(1, b * c, h + 2 * r, w + 2 * r), weight, groups=b * c).reshape(b, c, h, w)


def _correlate_fft(padded: Tensor, kernels: Tensor, h: int, w: int) -> Tensor:
    """Valid correlation of padded images ``(B, C, h + k - 1, w + k - 1)`` with kernels ``(B or 1, k, k)``.

    The circular convolution with the flipped kernel ``K'[m] = K[k - 1 - m]`` is
    ``(P * K')[n] = sum_i K[i] P[n - (k - 1) + i]``; read at ``n = y + k - 1`` it is the correlation at ``y``,
    and its indices ``y .. y + k - 1`` never wrap around.
    """
    size = tuple(padded.shape[-2:])
    k = kernels.shape[-1]
    product = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernels.flip(-2, -1)[:, None], s=size)
    return torch.fft.irfft2(product, s=size)[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w]


def disk_kernel(radius: float, supersample: int = 64, dtype: torch.dtype = torch.float64) -> Tensor:
    """Normalised pixel coverage of a disk of ``radius`` pixels centred on the middle pixel, ``(k, k)``.

    ``K[i, j]`` is the fraction of pixel ``(i, j)``'s area inside ``x^2 + y^2 <= radius^2``, measured at
    ``supersample^2`` points per pixel, divided by the sum. Coverage (rather than ImageNet-C's binary disk of
    pixel centres) grows smoothly with the radius, which the sub-pixel radii of small images need.
    """
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    half = math.ceil(radius)
    sub = (torch.arange(supersample, dtype=dtype) + 0.5) / supersample - 0.5  # sample offsets inside a pixel
    pos = (torch.arange(-half, half + 1, dtype=dtype)[:, None] + sub[None, :]).reshape(-1)  # (k * s,)
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2 <= radius**2).to(dtype)
    k = 2 * half + 1
    coverage = inside.reshape(k, supersample, k, supersample).sum(dim=(1, 3))
    if coverage.sum() == 0:  # radius 0: no sample inside, the blur is the identity
        coverage[half, half] = 1.0
    return coverage / coverage.sum()


def defocus_blur(images: Tensor, radius: float) -> Tensor:
    """Correlate with :func:`disk_kernel` (``radius`` in pixels), reflect-101 padding."""
    return filter2d(images, disk_kernel(radius)).clamp_(0.0, 1.0)


def gaussian_blur(images: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian of ``sigma`` pixels cut at ``truncate`` sigma (scipy's default 4), reflect-101 padding.

    The radius is capped at ``side - 1``, the most that reflect padding allows.
    """
    size = min(gaussian_kernel_size(sigma, truncate), 2 * min(images.shape[-2:]) - 1)
    return _separable_gaussian_blur(images, sigma, size)


def motion_kernels(radius: float, sigma: float, angles: Tensor, step: float = 0.25) -> Tensor:
    """``(B, k, k)`` one-sided line kernels of a motion blur, one per angle (radians, 0 = to the right).

    Along the direction ``u = (cos a, sin a)`` (x right, y down), taps at ``t = 0, step, ..., 2 radius`` weigh
    ``exp(-t^2 / (2 sigma^2))`` (ImageMagick's motion blur, whose kernel ImageNet-C uses, has unit steps and
    ``2 ceil(radius) + 1`` taps); each tap is spread bilinearly over the 4 pixels around ``t u``, so short
    kernels at sub-pixel lengths still turn smoothly with the angle. Normalised to sum 1.
    """
    angles = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    length = 2.0 * radius
    half = math.ceil(length) + 1
    k = 2 * half + 1
    t = torch.arange(0.0, length + 1e-9, step, dtype=torch.float64)
    weight = torch.exp(-0.5 * (t / max(sigma, 1e-12)) ** 2)
    x = half + t[None, :] * torch.cos(angles)[:, None]  # (B, T) kernel coordinates of the taps
    y = half + t[None, :] * torch.sin(angles)[:, None]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    kernels = torch.zeros(angles.shape[0], k * k, dtype=torch.float64)
    for dy, dx, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        index = ((y0 + dy) * k + (x0 + dx)).long()
        kernels.scatter_add_(1, index, share * weight[None, :])
    kernels = kernels.reshape(-1, k, k)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def motion_blur(images: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """``out(p) = sum_t w(t) x(p + t u_b)`` with the kernels of :func:`motion_kernels`, reflect-101 padding."""
    return filter2d(images, motion_kernels(radius, sigma, angles)).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------- photometric


def contrast(images: Tensor, factor: float) -> Tensor:
    """``(x - m_c) f + m_c`` with ``m_c`` each image's channel mean; for ``f <= 1`` it stays in ``[0, 1]``."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return ((images - mean) * factor + mean).clamp_(0.0, 1.0)


def brightness(images: Tensor, delta: float) -> Tensor:
    """Add ``delta`` to the HSV value ``V = max(R, G, B)`` (clipped to 1), keeping hue and saturation.

    HSV to RGB is linear in ``V`` at fixed hue and saturation (each channel is ``V (1 - S f(H))``), so the round
    trip is ``x V' / V`` with ``V' = min(V + delta, 1)``; black pixels (``V = 0``, saturation 0 by convention)
    become the grey ``V'``. This is exactly skimage's ``hsv2rgb`` after ``rgb2hsv`` with ``V`` shifted.
    """
    value = images.amax(dim=-3, keepdim=True)
    new_value = (value + delta).clamp(0.0, 1.0)
    ratio = new_value / value.clamp(min=1e-12)
    return torch.where(value > 0, images * ratio, new_value).clamp_(0.0, 1.0)


def box_resize_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(out_size, in_size)`` weights of Pillow's ``BOX`` resampling along one axis.

    Output pixel ``i`` has centre ``c_i = (i + 1/2) s`` with ``s = in_size / out_size``; input pixel ``j`` counts
    when its centre lies in the box ``(c_i - S/2, c_i + S/2]``, ``S = max(s, 1)`` (so downscaling averages the
    pixels whose centres fall in the footprint and upscaling picks the nearest pixel); rows sum to 1.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centre = (torch.arange(out_size, dtype=dtype) + 0.5) * scale
    offset = (torch.arange(in_size, dtype=dtype)[None, :] + 0.5 - centre[:, None]) / support
    weight = ((offset > -0.5) & (offset <= 0.5)).to(dtype)
    return weight / weight.sum(dim=1, keepdim=True)


def pixelate(images: Tensor, factor: float) -> Tensor:
    """Box-downscale to ``int(side factor)`` pixels per axis, then box-upscale back (Pillow ``BOX`` both ways)."""
    _, _, h, w = images.shape
    small_h, small_w = max(1, int(h * factor)), max(1, int(w * factor))
    rows = box_resize_matrix(small_h, h) @ box_resize_matrix(h, small_h)  # (h, h): down then up
    cols = box_resize_matrix(small_w, w) @ box_resize_matrix(w, small_w)
    rows = rows.to(device=images.device, dtype=images.dtype)
    cols = cols.to(device=images.device, dtype=images.dtype)
    return (rows @ images @ cols.T).clamp_(0.0, 1.0)


def jpeg(images: Tensor, quality: int) -> Tensor:
    """Pillow JPEG round trip per image at ``quality`` (default 4:2:0 chroma subsampling), on ``round(255 x)``.

    The output is the decoded ``uint8`` image over 255; real JPEG (rather than a DCT-quantisation imitation)
    keeps the colour conversion, chroma subsampling and block artefacts that ImageNet-C's JPEG has.
    """
    arrays = (
        (images.detach() * 255.0).round_().clamp_(0, 255).to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    )
    out = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    decoded_batch = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    return decoded_batch.to(device=images.device, dtype=images.dtype) / 255.0


# ----------------------------------------------------------------------------------------------------- weather


def fractal_noise(
    batch: int,
    height: int,
    width: int,
    decay: float,
    base_cell: float,
    generator: torch.Generator,
    like: Tensor,
    octaves: int = 8,
) -> Tensor:
    """``(B, 1, H, W)`` multi-octave value noise normalised to ``[0, 1]`` per sample (a plasma-fractal stand-in).

    ``f = sum_k decay^(-2k) bicubic(U_k)`` for octaves ``k = 0..octaves-1`` whose lattice cells are
    ``base_cell / 2^k`` pixels (octaves with cells under one pixel are skipped), ``U_k`` uniform in ``[-1, 1]``
    at the lattice points with a random sub-cell offset per octave; then ``(f - min f) / (max f - min f)``.
    The amplitude ratio ``decay^-2`` per halving of the cell is that of ImageNet-C's diamond-square plasma, whose
    displacement at each level is ``wibble U(-wibble, wibble)`` with ``wibble`` divided by ``decay`` per level.
    """
    total = torch.zeros(batch, 1, height, width, device=like.device)
    ys = torch.arange(height, dtype=torch.float32, device=like.device)
    xs = torch.arange(width, dtype=torch.float32, device=like.device)
    for k in range(octaves):
        cell = base_cell / 2**k
        if cell < 1.0:
            break
        rows, cols = math.ceil(height / cell) + 2, math.ceil(width / cell) + 2
        lattice = _rand((batch, 1, rows, cols), generator, like) * 2.0 - 1.0
        shift = _rand((batch, 2), generator, like)  # lattice offset in cells, so octaves do not align
        gy = (ys[None, :] / cell + shift[:, :1]) / (rows - 1) * 2.0 - 1.0  # align_corners=True coordinates
        gx = (xs[None, :] / cell + shift[:, 1:]) / (cols - 1) * 2.0 - 1.0
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        octave = F.grid_sample(lattice, grid, mode="bicubic", padding_mode="border", align_corners=True)
        total += decay ** (-2.0 * k) * octave
    low = total.amin(dim=(-2, -1), keepdim=True)
    high = total.amax(dim=(-2, -1), keepdim=True)
    return (total - low) / (high - low).clamp(min=1e-12)


def fog(
    images: Tensor, strength: float, decay: float, base_cell: float, generator: torch.Generator
) -> Tensor:
    """``clip((x + s f) m / (m + s), 0, 1)``: grey :func:`fractal_noise` ``f`` added with weight ``s``, then the
    image rescaled by ``m / (m + s)``, ``m`` the image's maximum (ImageNet-C's fog)."""
    b, _, h, w = images.shape
    f = fractal_noise(b, h, w, decay, base_cell, generator, images).to(images.dtype)
    peak = images.amax(dim=(-3, -2, -1), keepdim=True)
    return ((images + strength * f) * (peak / (peak + strength))).clamp_(0.0, 1.0)


FROST_TINT = (0.86, 0.93, 1.0)  # frost photographs are blue-white


def splat_segments(
    height: int, width: int, y: Tensor, x: Tensor, angle: Tensor, length: Tensor, level: Tensor
) -> Tensor:
    """``(B, H, W)`` canvas with anti-aliased straight segments, all inputs ``(B, N)`` (pixels, radians).

    Segment ``n`` runs from ``(y, x)`` along ``(sin a, cos a)`` for ``length`` pixels; points every half pixel or
    closer are spread bilinearly over their 4 neighbouring pixels, each carrying ``level`` times its spacing,
    so a segment adds about ``level`` per pixel of its length wherever it lies, whatever the sampling.
    """
    batch = y.shape[0]
    steps = max(2, math.ceil(2 * float(length.max())) + 1)
    t = torch.linspace(0.0, 1.0, steps, dtype=y.dtype, device=y.device)
    # Points off the image are clamped into a border of the canvas, which is cut off at the end.
    py = torch.addcmul(y[..., None], t, (length * torch.sin(angle))[..., None]).clamp_(-1.0, height)
    px = torch.addcmul(x[..., None], t, (length * torch.cos(angle))[..., None]).clamp_(-1.0, width)
    value = (level * length / steps)[..., None]
    y_floor, x_floor = py.floor(), px.floor()
    fy, fx = py.sub_(y_floor), px.sub_(x_floor)
    stride = width + 3  # canvas rows and columns run from -1 to H + 1 and W + 1
    base = ((y_floor + 1.0) * stride + (x_floor + 1.0)).long().reshape(batch, -1)
    low_y, low_x = 1.0 - fy, 1.0 - fx
    canvas = torch.zeros(batch, (height + 3) * stride, dtype=y.dtype, device=y.device)
    for offset, share in ((0, low_y * low_x), (1, low_y * fx), (stride, fy * low_x), (stride + 1, fy * fx)):
        canvas.scatter_add_(1, base + offset, (share * value).reshape(batch, -1))
    return canvas.reshape(batch, height + 3, stride)[:, 1 : height + 1, 1 : width + 1]


FROST_NEEDLES = 900  # ice needles per 224 x 224 reference image


def frost_texture(
    batch: int, height: int, width: int, scale: float, generator: torch.Generator, like: Tensor
) -> Tensor:
    """``(B, 3, H, W)`` procedural frost in ``[0, 1]``: a patchy glaze carrying feathery ice needles, blue-white.

    ImageNet-C blends crops of frost photographs, which cannot ship here. Stand-in:
    ``F = clip(tint (0.1 + 0.4 d + 1.5 d N), 0, 1)`` with tint ``(0.86, 0.93, 1)`` and ``d`` a coarse
    :func:`fractal_noise` (decay 1.6, cells from ``256 scale`` pixels) saying where the frost is thick. ``N``
    holds ``900 area`` needles (``area`` in 224-pixel images) at uniform positions and angles, of length
    ``U(4, 20) scale`` pixels and level ``U(0.3, 0.8) scale`` (a line ``scale`` pixels wide), each with 4 side
    branches at +-60 degrees (ice's hexagonal habit), a third as long and 0.7 times as bright, leaving it between
    15% and 85% of its length; drawn by :func:`splat_segments`, blurred by a Gaussian of ``max(0.4, 0.5 scale)``.
    """
    area = height * width / (224.0 * scale) ** 2
    n = max(1, round(FROST_NEEDLES * area))
    draws = _rand((batch, n, 7), generator, like)
    y0, x0 = draws[..., 0] * height, draws[..., 1] * width
    angle = draws[..., 2] * 2 * math.pi
    length = (4.0 + 16.0 * draws[..., 3]) * scale
    level = (0.3 + 0.5 * draws[..., 4]) * scale  # ink per pixel of length: the needles are `scale` wide
    branch_y, branch_x, branch_angle = [], [], []
    for at, side in ((5, 1.0), (5, -1.0), (6, 1.0), (6, -1.0)):
        fraction = 0.15 + 0.7 * draws[..., at]  # branches leave the needle between 15% and 85% of its length
        branch_y.append(y0 + fraction * length * torch.sin(angle))
        branch_x.append(x0 + fraction * length * torch.cos(angle))
        branch_angle.append(angle + side * math.pi / 3)
    canvas = splat_segments(height, width, y0, x0, angle, length, level)
    # Branches in their own call: 3 times shorter, they need 3 times fewer points per segment.
    canvas += splat_segments(
        height,
        width,
        torch.cat(branch_y, dim=1),
        torch.cat(branch_x, dim=1),
        torch.cat(branch_angle, dim=1),
        (length / 3).repeat(1, 4),
        (0.7 * level).repeat(1, 4),
    )
    needles = canvas[:, None].expand(-1, 3, -1, -1)
    needles = gaussian_blur(needles, max(0.4, 0.5 * scale), truncate=3.0)[:, :1]
    thick = fractal_noise(batch, height, width, 1.6, 256.0 * scale, generator, like)
    tint = torch.tensor(FROST_TINT, device=like.device).reshape(1, 3, 1, 1)
    return ((0.1 + 0.4 * thick + 1.5 * thick * needles) * tint).clamp_(0.0, 1.0)


FROST_BANK = 8  # frost textures rendered per call, at most


def frost(
    images: Tensor, image_weight: float, frost_weight: float, scale: float, generator: torch.Generator
) -> Tensor:
    """``clip(a x + b F, 0, 1)`` with ``F`` a random crop of a procedural frost texture (ImageNet-C's frost blend).

    As ImageNet-C crops one of 6 frost photographs at random, each call renders ``min(B, 8)`` textures of
    :func:`frost_texture` at ``3/2`` the image side, and sample ``b`` takes a uniform random crop of a random
    one, turned by a random number of quarter turns when the images are square: the texture costs what 18
    images cost, whatever the batch size.
    """
    b, _, h, w = images.shape
    bank_h, bank_w = (3 * h + 1) // 2, (3 * w + 1) // 2
    bank = frost_texture(min(b, FROST_BANK), bank_h, bank_w, scale, generator, images).to(images.dtype)
    pick = _rand((b, 4), generator, images)
    which = (pick[:, 0] * bank.shape[0]).long()
    top = (pick[:, 1] * (bank_h - h + 1)).long()
    left = (pick[:, 2] * (bank_w - w + 1)).long()
    rows = top[:, None, None] + torch.arange(h, device=images.device)[None, :, None]  # (B, H, 1)
    cols = left[:, None, None] + torch.arange(w, device=images.device)[None, None, :]  # (B, 1, W)
    texture = bank.permute(0, 2, 3, 1)[which[:, None, None], rows, cols].permute(0, 3, 1, 2)  # (B, 3, H, W)
    if h == w:
        texture = _quarter_turns(texture, (pick[:, 3] * 4).long())
    return (image_weight * images + frost_weight * texture).clamp_(0.0, 1.0)


def _quarter_turns(images: Tensor, turns: Tensor) -> Tensor:
    """Sample ``b`` turned by ``turns[b]`` quarter turns counter-clockwise (square images)."""
    out = images.clone()
    for k in (1, 2, 3):
        idx = torch.nonzero(turns == k).squeeze(1)
        if idx.numel():
            out[idx] = torch.rot90(images[idx], k, dims=(-2, -1))
    return out


__all__ = [
    "FFT_MIN_KERNEL",
    "FROST_BANK",
    "FROST_NEEDLES",
    "FROST_TINT",
    "box_resize_matrix",
    "brightness",
    "contrast",
    "defocus_blur",
    "disk_kernel",
    "filter2d",
    "fog",
    "fractal_noise",
    "frost",
    "frost_texture",
    "gaussian_blur",
    "gaussian_noise",
    "impulse_noise",
    "jpeg",
    "motion_blur",
    "motion_kernels",
    "pixelate",
    "shot_noise",
    "splat_segments",
]
