"""Contact sheets: what the world looks like, one row per factor sweep, one sheet per distribution, a video strip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .background import PHOTO_KIND
from .catalog import CATEGORY_NAMES
from .factors import Factors
from .renderer import World
from .shading import TEXTURE_KINDS, temperature_rgb
from .store import RenderedDataset

LABEL_WIDTH = 110
SWEEP = 10  # images per sweep row
TRACK_COLORS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]


def factor_sweeps(world: World, category: int = 0, instance: int = 0) -> list[tuple[str, Factors]]:
    """One batch per factor: the reference image's factors with only that factor swept."""
    n = SWEEP

    def base(k: int = n) -> Factors:
        f = Factors.default(k)
        f.category[:, 0], f.instance[:, 0] = category, instance
        f.distance[:] = 3.0
        f.background_kind[:] = 0
        return f

    lin = torch.linspace(0, 1, n)
    rows = []
    f = base()
    f.azimuth = lin * 360 * (n - 1) / n
    rows.append(("azimuth", f))
    f = base()
    f.elevation = -10 + lin * 80
    rows.append(("elevation", f))
    f = base()
    f.distance = 2.6 + lin * 3.4
    rows.append(("distance", f))
    f = base()
    f.shift = torch.stack((lin * 0.5 - 0.25, torch.zeros(n)), 1)
    rows.append(("position", f))
    f = base()
    f.light_azimuth = lin * 360 * (n - 1) / n
    rows.append(("light direction", f))
    f = base()
    f.light_temperature = 2000 + lin * 10000
    f.light_rgb = temperature_rgb(f.light_temperature)
    rows.append(("light colour", f))
    for shape, name in ((1, "occlusion (bar)"), (2, "occlusion (disc)")):
        f = base(9)
        f.occluder_shape[:] = shape
        f.occluder_coverage = torch.arange(9) / 10
        f.occluder_angle[:] = 20.0
        f.occluder_rgb[:] = torch.tensor([0.35, 0.3, 0.28])
        rows.append((name, f))
    f = base()
    f.background_kind = torch.arange(n) % (PHOTO_KIND + 1)
    f.background_params = torch.stack(
        (torch.full((n,), 30.0), torch.full((n,), 3.0), torch.zeros(n), torch.full((n,), 0.5)), 1
    )
    f.background_params[f.background_kind == PHOTO_KIND] = torch.tensor(
        [[1.0, 0.5, 0.4, 0.5], [2.0, 0.5, 0.5, 0.5]]
    )
    f.background_colors = torch.rand(n, 2, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    rows.append(("background", f))
    f = base(len(TEXTURE_KINDS) - 1)
    f.texture_override[:, 0] = torch.arange(len(TEXTURE_KINDS) - 1)
    rows.append(("texture", f))
    f = base()
    f.instance[:, 0] = torch.arange(n) % world.config.instances_per_category
    rows.append(("instance", f))
    C = len(CATEGORY_NAMES)
    for start in range(0, C, n):
        f = base(min(n, C - start))
        f.category[:, 0] = torch.arange(start, start + f.batch_size)
        rows.append(("category" if start == 0 else "", f))
    return rows


def _row(label: str, images: np.ndarray, size: int) -> Image.Image:
    row = Image.new("RGB", (LABEL_WIDTH + SWEEP * size, size), (255, 255, 255))
    for k, img in enumerate(images):
        row.paste(
            Image.fromarray(img.transpose(1, 2, 0)).resize((size, size), Image.NEAREST),
            (LABEL_WIDTH + k * size, 0),
        )
    ImageDraw.Draw(row).text((6, size // 2 - 6), label, fill=(0, 0, 0))
    return row


def _stack(rows: list[Image.Image]) -> Image.Image:
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def factor_sheet(world: World, path: Path, size: int = 96) -> Path:
    rows = []
    for label, f in factor_sweeps(world):
        rows.append(_row(label, world.render(f).images.cpu().numpy(), size))
    _stack(rows).save(path)
    return path


def _draw_boxes(img: np.ndarray, boxes: np.ndarray, ids: list[int], scale: int) -> Image.Image:
    im = Image.fromarray(img.transpose(1, 2, 0)).resize(
        (img.shape[2] * scale, img.shape[1] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(im)
    for box, tid in zip(boxes, ids, strict=False):
        if box[0] >= 0 and tid >= 0:
            draw.rectangle([float(v) * scale for v in box], outline=TRACK_COLORS[tid % len(TRACK_COLORS)])
    return im


def dataset_sheet(ds: RenderedDataset, path: Path, title: str, n: int = 40, per_row: int = 10) -> Path:
    """The first ``n`` images of a dataset; each is followed by its instance mask when the dataset has objects."""
    n = min(n, len(ds))
    H = ds.images.shape[-1]
    scale = max(1, 96 // H)
    rows = []
    for start in range(0, n, per_row):
        imgs = [
            _draw_boxes(ds.images[i], ds.boxes[i], list(range(ds.boxes.shape[1])), scale)
            for i in range(start, min(start + per_row, n))
        ]
        masks = [_mask_image(ds.instance_mask[i], scale) for i in range(start, min(start + per_row, n))]
        for group in (imgs, masks):
            row = Image.new("RGB", (LABEL_WIDTH + per_row * H * scale, H * scale), (255, 255, 255))
            for k, im in enumerate(group):
                row.paste(im, (LABEL_WIDTH + k * H * scale, 0))
            rows.append(row)
    ImageDraw.Draw(rows[0]).text((6, 6), title, fill=(0, 0, 0))
    ImageDraw.Draw(rows[1]).text((6, 6), "instance masks", fill=(0, 0, 0))
    _stack(rows).save(path)
    return path


def _mask_image(mask: np.ndarray, scale: int) -> Image.Image:
    palette = np.array([(20, 20, 20), *TRACK_COLORS] * 40, dtype=np.uint8)[:256]
    palette[255] = (128, 128, 128)  # occluders
    rgb = palette[np.asarray(mask)]
    return Image.fromarray(rgb).resize((mask.shape[1] * scale, mask.shape[0] * scale), Image.NEAREST)


def video_strip(ds: RenderedDataset, path: Path, clips: int = 3, frames: int = 10) -> Path:
    """A few clips as rows of frames, boxes coloured by persistent track id."""
    meta = ds.meta
    H = ds.images.shape[-1]
    scale = max(1, 96 // H)
    O = ds.boxes.shape[1]
    rows = []
    for c in np.unique(meta["clip"])[:clips]:
        idx = np.nonzero(meta["clip"] == c)[0]
        idx = idx[np.linspace(0, len(idx) - 1, min(frames, len(idx))).round().astype(int)]
        row = Image.new("RGB", (LABEL_WIDTH + frames * H * scale, H * scale), (255, 255, 255))
        for k, i in enumerate(idx):
            ids = [int(meta[f"track_{o}"][i]) for o in range(O)]
            row.paste(_draw_boxes(ds.images[i], ds.boxes[i], ids, scale), (LABEL_WIDTH + k * H * scale, 0))
        ImageDraw.Draw(row).text((6, H * scale // 2 - 6), f"clip {int(c)}", fill=(0, 0, 0))
        rows.append(row)
    _stack(rows).save(path)
    return path
