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
    kind: Tensor, colors: Tensor, params: Tensor, height: int, width: int, procedural=None
) -> Tensor:
    """Render backgrounds ``(B, 3, H, W)`` in [0, 1] for per-image ``kind (B,)``, ``colors (B, 2, 3)``,
    ``params (B, 4)``; ``procedural`` replaces :func:`procedural_background` (e.g. by a compiled copy)."""
    B, device = kind.shape[0], kind.device
    out = torch.empty(B, 3, height, width, device=device)
    is_photo = kind == PHOTO_KIND
    drawn = torch.nonzero(~is_photo).squeeze(1)
    if drawn.numel():
        out[drawn] = (procedural or procedural_background)(
            kind[drawn], colors[drawn], params[drawn], height, width
        )
    if drawn.numel() < B:
        out[is_photo] = _photo_crops(params[is_photo], height, width)
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


def _photo_crops(params: Tensor, height: int, width: int) -> Tensor:
    """Square crops of the bundled photos resized to (H, W) with bilinear sampling.

    One ``grid_sample`` per photo id with the crops' grids stacked along the output height, so the photo is
    never copied per crop.
    """
    bank = photos(params.device)
    n = params.shape[0]
    out = torch.empty(n, 3, height, width, device=params.device)
    pid = params[:, 0].round().long().clamp(0, len(PHOTO_NAMES) - 1)
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
