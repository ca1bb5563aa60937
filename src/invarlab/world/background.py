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


def make_background(kind: Tensor, colors: Tensor, params: Tensor, height: int, width: int) -> Tensor:
    """Render backgrounds ``(B, 3, H, W)`` in [0, 1] for per-image ``kind (B,)``, ``colors (B, 2, 3)``,
    ``params (B, 4)``."""
    B, device = kind.shape[0], kind.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height - 0.5
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ang = torch.deg2rad(params[:, 0]).view(B, 1, 1)
    freq, phase = params[:, 1].view(B, 1, 1), params[:, 2].view(B, 1, 1)
    u = xx * ang.cos() + yy * ang.sin()
    v = -xx * ang.sin() + yy * ang.cos()
    gradient = (u + 0.5).clamp(0, 1)
    stripes = (0.5 + 2 * torch.sin(2 * math.pi * freq * u + phase)).clamp(0, 1)
    checker = (0.5 + 4 * torch.sin(2 * math.pi * freq * u + phase) * torch.sin(2 * math.pi * freq * v)).clamp(
        0, 1
    )
    blobs = 0.5 + 0.25 * (
        torch.sin(2 * math.pi * freq * u + phase) + torch.sin(2 * math.pi * 0.7 * freq * v - phase)
    )
    m = torch.stack((gradient, stripes, checker, blobs, torch.zeros_like(u)), 1)[
        torch.arange(B), kind.clamp(0, 4)
    ]
    c0, c1 = colors[:, 0].view(B, 3, 1, 1), colors[:, 1].view(B, 3, 1, 1)
    out = c0 * (1 - m[:, None]) + c1 * m[:, None]
    is_photo = kind == PHOTO_KIND
    if bool(is_photo.any()):
        out[is_photo] = _photo_crops(params[is_photo], height, width)
    return out


def _photo_crops(params: Tensor, height: int, width: int) -> Tensor:
    """Square crops of the bundled photos resized to (H, W) with bilinear sampling, one grid per photo id."""
    bank = photos(params.device)
    out = torch.empty(params.shape[0], 3, height, width, device=params.device)
    pid = params[:, 0].round().long().clamp(0, len(PHOTO_NAMES) - 1)
    for k in pid.unique().tolist():
        sel = pid == k
        p = params[sel]
        size = p[:, 3].clamp(0.05, 1.0)
        cx = p[:, 1].clamp(size / 2, 1 - size / 2) * 2 - 1
        cy = p[:, 2].clamp(size / 2, 1 - size / 2) * 2 - 1
        theta = torch.zeros(p.shape[0], 2, 3, device=p.device)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = size, size, cx, cy
        grid = F.affine_grid(theta, [p.shape[0], 3, height, width], align_corners=False)
        src = bank[k : k + 1].expand(p.shape[0], -1, -1, -1)
        out[sel] = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out
