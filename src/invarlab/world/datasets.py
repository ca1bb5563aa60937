"""From a :class:`DatasetSpec` to rendered batches: factor plans per kind, and boxes cropped out of scenes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.errors import ConfigError

from .config import DatasetSpec, WorldConfig
from .factors import Factors
from .renderer import RenderOutput, World
from .sampling import object_centric, scene_centric
from .sets import SET_KINDS, invariance_set, set_size
from .video import clips

CROP_MARGIN = 1.15  # square crop side = margin x the box's longer side


def plan(spec: DatasetSpec, world: WorldConfig) -> tuple[Factors, dict[str, Tensor]]:
    """Every image's factors and extra columns (set ids, clip and track ids) for all kinds but cropped boxes."""
    gen = torch.Generator().manual_seed(spec.seed)
    if spec.kind == "object_centric":
        return object_centric(spec.num_images, spec, world, gen), {}
    if spec.kind == "scene_centric":
        return scene_centric(spec.num_images, spec, world, gen), {}
    if spec.kind == "clips":
        return clips(spec, world, gen)
    if spec.kind in SET_KINDS:
        return invariance_set(spec, world, gen)
    raise ValueError(f"no factor plan for kind {spec.kind!r}")


def num_images(spec: DatasetSpec) -> int:
    """Images a spec yields: sets and clips come whole, so they round down to a multiple of their size."""
    if spec.kind in SET_KINDS:
        k = set_size(spec)
        return max(1, spec.num_images // k) * k
    if spec.kind == "clips":
        return max(1, spec.num_images // spec.clip_length) * spec.clip_length
    return spec.num_images


def cache_identity(spec: DatasetSpec, world: WorldConfig) -> dict:
    """What determines a dataset's content (not where or how fast it is rendered)."""
    w = asdict(world)
    for k in ("device", "compile", "batch_size"):
        w["render"].pop(k)
    return {"world": w, "dataset": asdict(spec)}


def iter_batches(spec: DatasetSpec, world: World, batch_size: int | None = None) -> Iterator[dict]:
    """Rendered batches in the store's format (numpy arrays plus a ``meta`` dict of columns)."""
    batch_size = batch_size or world.render_config.batch_size
    if spec.kind == "cropped_boxes":
        yield from _cropped_batches(spec, world, batch_size)
        return
    factors, extra = plan(spec, world.config)
    for start in range(0, factors.batch_size, batch_size):
        stop = min(start + batch_size, factors.batch_size)
        out = world.render(factors.slice(start, stop))
        yield to_batch(out, {k: v[start:stop] for k, v in extra.items()})


def to_batch(out: RenderOutput, extra: dict[str, Tensor]) -> dict:
    meta = out.factors.records()
    meta.update({k: v.numpy() for k, v in extra.items()})
    for o in range(out.visible_fraction.shape[1]):
        meta[f"visible_fraction_{o}"] = out.visible_fraction[:, o].cpu().numpy()
    meta["occluded_fraction"] = out.occluded_fraction.cpu().numpy()
    return {
        "images": out.images.cpu().numpy(),
        "instance_mask": out.instance_mask.cpu().numpy(),
        "category_mask": out.category_mask.cpu().numpy(),
        "boxes": out.boxes.cpu().numpy().astype(np.float32),
        "visible_fraction": out.visible_fraction.cpu().numpy().astype(np.float32),
        "meta": meta,
    }


_MAX_EMPTY_ROUNDS = 20


def _cropped_batches(spec: DatasetSpec, world: World, batch_size: int) -> Iterator[dict]:
    """Object boxes cut out of scene-centric renders (at twice the resolution), resized to the dataset's size.

    Boxes whose shorter side is under ``min_box`` pixels (at the dataset resolution) or that are less than 30%
    visible are skipped; scenes are drawn until exactly ``num_images`` crops exist.
    """
    res = world.render_config.resolution
    big_cfg = copy.deepcopy(world.config)
    big_cfg.render.resolution = res * 2
    big = World(big_cfg)
    scene_spec = copy.deepcopy(spec)
    scene_spec.kind = "scene_centric"
    gen = torch.Generator().manual_seed(spec.seed)
    made, round_, largest = 0, 0, 0.0
    while made < spec.num_images:
        if made == 0 and round_ == _MAX_EMPTY_ROUNDS:
            # Without this the loop would draw scenes forever when min_box is out of reach.
            raise ConfigError(
                f"cropped_boxes: no object box of {_MAX_EMPTY_ROUNDS} scene batches reached min_box="
                f"{spec.min_box} px at resolution {res} (largest side seen: {largest:.1f} px); "
                f"lower min_box or raise render.resolution"
            )
        scenes = scene_centric(max(8, batch_size // 2), scene_spec, world.config, gen)
        out = big.render(scenes)
        box = out.boxes / 2  # in dataset-resolution pixels
        side = torch.minimum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])
        keep = (side >= spec.min_box) & (out.visible_fraction >= 0.3) & (box[..., 0] >= 0)
        largest = max(largest, float(side.max()))
        b_idx, o_idx = keep.nonzero(as_tuple=True)
        b_idx, o_idx = b_idx[: spec.num_images - made], o_idx[: spec.num_images - made]
        if len(b_idx):
            yield _crop(out, b_idx, o_idx, res, round_)
        made += len(b_idx)
        round_ += 1


def _crop(out: RenderOutput, b: Tensor, o: Tensor, res: int, round_: int) -> dict:
    H = out.images.shape[-1]
    x0, y0, x1, y1 = out.boxes[b, o].unbind(-1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = torch.maximum(x1 - x0, y1 - y0) * CROP_MARGIN
    theta = torch.zeros(len(b), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side / H
    theta[:, 0, 2], theta[:, 1, 2] = cx / H * 2 - 1, cy / H * 2 - 1
    grid = F.affine_grid(theta, [len(b), 1, res, res], align_corners=False)
    img = F.grid_sample(
        out.images[b].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    inst = F.grid_sample(out.instance_mask[b, None].float(), grid, mode="nearest", align_corners=False)[:, 0]
    cat = F.grid_sample(out.category_mask[b, None].float(), grid, mode="nearest", align_corners=False)[:, 0]
    own = inst == (o + 1).view(-1, 1, 1)
    new_box = (out.boxes[b, o] - torch.stack((cx - side / 2, cy - side / 2) * 2, -1)) * (res / side).view(
        -1, 1
    )
    meta = out.factors.index(b).records()
    meta.update(
        {
            "scene_round": np.full(len(b), round_),
            "scene_index": b.numpy(),
            "crop_object": o.numpy(),
            "crop_category": out.factors.category[b, o].numpy(),
            "crop_instance": out.factors.instance[b, o].numpy(),
            "visible_fraction_0": out.visible_fraction[b, o].numpy(),
        }
    )
    return {
        "images": img.round().clamp(0, 255).to(torch.uint8).numpy(),
        "instance_mask": own.to(torch.uint8).numpy(),
        "category_mask": torch.where(own, cat, 0).to(torch.uint8).numpy(),
        "boxes": new_box.view(-1, 1, 4).numpy().astype(np.float32),
        "visible_fraction": out.visible_fraction[b, o].view(-1, 1).numpy().astype(np.float32),
        "meta": meta,
    }
