"""Backgrounds: procedural patterns and crops of the real photographs bundled with scikit-image.

A background is ``kind`` (see :data:`BACKGROUND_KINDS`), two colours ``(2, 3)`` and four parameters: for
procedural kinds ``(angle_deg, frequency, phase, unused)``, for photos ``(photo_id, centre_x, centre_y, size)``
with the crop centre and side as fractions of the photo's shorter side.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .compiled import compiled_or_eager

BACKGROUND_KINDS = ("gradient", "stripes", "checker", "blobs", "photo")
PHOTO_KIND = BACKGROUND_KINDS.index("photo")
# colour photographs shipped inside the scikit-image wheel (no download)
PHOTO_NAMES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "camera.png",
)
PHOTO_SIDE = 256


@lru_cache(maxsize=1)
def _photos_cpu() -> Tensor:
    """The bundled photos as one ``(N, 3, 256, 256)`` float tensor (centre square, resized, grey -> RGB)."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name in PHOTO_NAMES:
        with Image.open(folder / name) as im:
            img = np.asarray(im.convert("RGB"))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        img = img[..., :3].astype(np.float32) / 255.0
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        out.append(F.interpolate(t, size=(PHOTO_SIDE, PHOTO_SIDE), mode="area")[0])
    return torch.stack(out)


def photos(device: torch.device | str = "cpu") -> Tensor:
    return _photos_cpu().to(device)


def make_background(
    kind: Tensor, colors: Tensor, params: Tensor, height: int, width: int, procedural=None, photo=None
) -> Tensor:
    """Render backgrounds ``(B, 3, H, W)`` in [0, 1] for per-image ``kind (B,)``, ``colors (B, 2, 3)``,
    ``params (B, 4)``; ``procedural`` and ``photo`` replace :func:`procedural_background` and
    :func:`photo_crops` (e.g. by compiled copies)."""
    B, device = kind.shape[0], kind.device
    out = torch.empty(B, 3, height, width, device=device)
    is_photo = kind == PHOTO_KIND
    drawn = torch.nonzero(~is_photo).squeeze(1)
    if drawn.numel():
        pick = (kind[drawn], colors[drawn], params[drawn])
        out.index_copy_(0, drawn, (procedural or procedural_background)(*pick, height, width))
    if drawn.numel() < B:
        shot = torch.nonzero(is_photo).squeeze(1)
        out.index_copy_(0, shot, (photo or photo_crops)(photos(device), params[shot], height, width))
    return out


def procedural_background(kind: Tensor, colors: Tensor, params: Tensor, height: int, width: int) -> Tensor:
    """Two-colour patterns mixed by ``m(u, v)`` in rotated frame coordinates ``u, v`` (frame centre 0, side 1):
    gradient ``u + 1/2``; stripes ``1/2 + 2 sin(2π f u + φ)``; checker ``1/2 + 4 sin(2π f u + φ) sin(2π f v)``;
    blobs ``1/2 + (sin(2π f u + φ) + sin(1.4 π f v - φ)) / 4``; each clamped to [0, 1]."""
    B, device = kind.shape[0], kind.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height - 0.5
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5
    ang = torch.deg2rad(params[:, 0]).view(B, 1, 1)
    freq, phase = params[:, 1].view(B, 1, 1), params[:, 2].view(B, 1, 1)
    xx, yy = xs.view(1, 1, -1), ys.view(1, -1, 1)
    u = xx * ang.cos() + yy * ang.sin()
    v = -xx * ang.sin() + yy * ang.cos()
    wave_u = torch.sin(2 * math.pi * freq * u + phase)
    k = kind.view(B, 1, 1)
    m = torch.where(k == 0, u + 0.5, 0.5 + 2 * wave_u)
    m = torch.where(k == 2, 0.5 + 4 * wave_u * torch.sin(2 * math.pi * freq * v), m)
    m = torch.where(k == 3, 0.5 + 0.25 * (wave_u + torch.sin(2 * math.pi * 0.7 * freq * v - phase)), m)
    m = m.clamp(0, 1).unsqueeze(1)
    return colors[:, 0].view(B, 3, 1, 1) * (1 - m) + colors[:, 1].view(B, 3, 1, 1) * m


def photo_crops(bank: Tensor, params: Tensor, height: int, width: int) -> Tensor:
    """Square crops of the photos ``bank`` ``(N, 3, S, S)`` resized to (H, W) with bilinear sampling.

    The crop of centre ``(c_x, c_y)`` and side ``z`` (fractions of the photo side, clamped inside it) samples
    the normalised point ``g = z (2 i + 1) / H - 1 + (2 c - 1)`` for output index ``i`` (``grid_sample`` with
    ``align_corners=False`` and border padding). One ``grid_sample`` per photo id with the crops' grids
    stacked along the output height, so the photo is never copied per crop. :func:`crop_taps` and
    :func:`bilinear_taps` compute the same crops as a compiled kernel.
    """
    n = params.shape[0]
    out = torch.empty(n, 3, height, width, device=params.device)
    pid = params[:, 0].round().long().clamp(0, bank.shape[0] - 1)
    size = params[:, 3].clamp(0.05, 1.0)
    cx = params[:, 1].clamp(size / 2, 1 - size / 2) * 2 - 1
    cy = params[:, 2].clamp(size / 2, 1 - size / 2) * 2 - 1
    # affine_grid of a scale-and-shift crop, by broadcasting (align_corners=False pixel centres)
    ys = (torch.arange(height, device=params.device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=params.device, dtype=torch.float32) * 2 + 1) / width - 1
    gx = (size.view(n, 1, 1) * xs.view(1, 1, width) + cx.view(n, 1, 1)).expand(n, height, width)
    gy = (size.view(n, 1, 1) * ys.view(1, height, 1) + cy.view(n, 1, 1)).expand(n, height, width)
    grid = torch.stack((gx, gy), -1)
    for k in pid.unique().tolist():
        sel = torch.nonzero(pid == k).squeeze(1)
        g = grid[sel].reshape(1, -1, width, 2)
        crops = F.grid_sample(bank[k : k + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
        out[sel] = crops.view(3, sel.numel(), height, width).transpose(0, 1)
    return out


def fma_eager(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``a b + c`` rounded once: eager ``addcmul`` is a fused multiply-add on CPUs that have one."""
    return torch.addcmul(c, a, b)


def crop_taps(bank: Tensor, params: Tensor, height: int, width: int) -> tuple[Tensor, ...]:
    """Where :func:`photo_crops` reads, for :func:`bilinear_taps`: flat offsets of the two source rows per crop, channel and output row
    ``(n, C, H)``, the two source columns per output column ``(n, W)``, and the weights ``w`` ``(n, W)`` and
    ``n`` ``(n, H)`` of the second column and row. The grid is separable, so these are all it needs."""
    n, (N, C, S, _) = params.shape[0], bank.shape
    pid = params[:, 0].round().long().clamp(0, N - 1)
    size = params[:, 3].clamp(0.05, 1.0)
    cx = params[:, 1].clamp(size / 2, 1 - size / 2) * 2 - 1
    cy = params[:, 2].clamp(size / 2, 1 - size / 2) * 2 - 1
    ys = (torch.arange(height, device=params.device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=params.device, dtype=torch.float32) * 2 + 1) / width - 1
    x = ((size.view(n, 1) * xs.view(1, width) + cx.view(n, 1) + 1) * (S / 2) - 0.5).clamp(0, S - 1)
    y = ((size.view(n, 1) * ys.view(1, height) + cy.view(n, 1) + 1) * (S / 2) - 0.5).clamp(0, S - 1)
    x0, y0 = x.floor(), y.floor()
    w, north = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    # the far tap is clamped onto the border, where its weight is 0
    x1, y1 = (x0 + 1).clamp_max(S - 1), (y0 + 1).clamp_max(S - 1)
    plane = ((pid.view(n, 1) * C + torch.arange(C, device=params.device).view(1, C)) * (S * S)).view(n, C, 1)
    return plane + (y0 * S).view(n, 1, height), plane + (y1 * S).view(n, 1, height), x0, x1, w, north


def bilinear_taps(
    flat: Tensor, row0: Tensor, row1: Tensor, x0: Tensor, x1: Tensor, w: Tensor, north: Tensor, fma=fma_eager
) -> Tensor:
    """:func:`photo_crops` ``(n, C, H, W)`` from the taps of :func:`crop_taps`, as ``grid_sample`` computes it.

    The source pixel of output index ``i`` is ``x = clamp((g + 1) S / 2 - 1/2, 0, S - 1)``; with ``x0 = ⌊x⌋``,
    ``w = x - x0``, ``e = 1 - w`` (and ``n``, ``s`` likewise for rows) the value is
    ``v_nw s e + v_ne s w + v_sw n e + v_se n w``, the last three terms added by fused multiply-adds ``fma``
    as ``grid_sample``'s CPU kernel does, so the crops equal its output bit for bit where the CPU has FMA.
    """
    n, C, H = row0.shape
    W = x0.shape[1]
    r0, r1 = row0.view(n, C, H, 1), row1.view(n, C, H, 1)
    c0, c1 = x0.view(n, 1, 1, W), x1.view(n, 1, 1, W)
    w, north = w.view(n, 1, 1, W), north.view(n, 1, H, 1)
    e, south = 1 - w, 1 - north
    out = flat[r0 + c0] * (south * e)
    out = fma(flat[r0 + c1], south * w, out)
    out = fma(flat[r1 + c0], north * e, out)
    return fma(flat[r1 + c1], north * w, out)


def fused_fma():
    """Inductor's fused multiply-add, for compiled copies of :func:`photo_crops` (``None`` if unavailable)."""
    try:
        import torch._inductor.inductor_prims  # registers torch.ops.prims.fma

        return torch.ops.prims.fma
    except (ImportError, AttributeError):  # pragma: no cover - depends on the torch build
        return None


def photo_crops_fn(compile: bool):
    """:func:`photo_crops`, compiled with inductor's fused multiply-add when ``compile`` is set.

    Taps and blend are compiled separately: fused into one kernel, the taps would be recomputed for every
    output value."""
    fma = fused_fma() if compile else None
    if fma is None:
        return photo_crops
    taps = compiled_or_eager(crop_taps, True)  # its eager fallback feeds the compiled or eager blend

    def blend_fused(*args: Tensor) -> Tensor:
        return bilinear_taps(*args, fma)

    blend = compiled_or_eager(blend_fused, True, eager=bilinear_taps)

    def photo_crops_compiled(bank: Tensor, params: Tensor, height: int, width: int) -> Tensor:
        return blend(bank.reshape(-1), *taps(bank, params, height, width))

    return photo_crops_compiled
