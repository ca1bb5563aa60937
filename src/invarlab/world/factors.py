"""The factors of variation of a batch of images: every one settable alone, every one recorded.

A :class:`Factors` holds per-object fields ``(B, O)`` (category, instance, yaw, position, scale, texture
override) and per-image fields ``(B, ...)`` (camera orbit, position in frame, light, occluder, background, floor).
Angles are in degrees; distances in object radii (every instance has bounding radius 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

PER_OBJECT = ("category", "instance", "yaw", "position", "scale", "texture_override")


@dataclass
class Factors:
    category: Tensor  # (B, O) long, -1 for an empty object slot
    instance: Tensor  # (B, O) long
    yaw: Tensor  # (B, O) object rotation about the vertical axis, degrees
    position: Tensor  # (B, O, 3) object centre in the world
    scale: Tensor  # (B, O) object radius
    texture_override: (
        Tensor  # (B, O) long: -1 keeps the instance's textures, else a texture kind for all parts
    )
    azimuth: Tensor  # (B,) camera azimuth about the target, degrees (0 = looking at the object's front, +z)
    elevation: Tensor  # (B,) camera elevation, degrees
    distance: Tensor  # (B,) camera distance to the target
    target: Tensor  # (B, 3) the point the camera looks at
    shift: Tensor  # (B, 2) where the target appears, offset from the frame centre as a fraction (x right, y down)
    light_azimuth: Tensor  # (B,) degrees, world frame
    light_elevation: Tensor  # (B,) degrees
    light_rgb: Tensor  # (B, 3) light colour, brightest channel 1
    light_temperature: Tensor  # (B,) kelvin the colour came from (0 if set as RGB directly)
    occluder_shape: Tensor  # (B,) long: 0 none, 1 bar (half-plane), 2 disc
    occluder_coverage: Tensor  # (B,) requested covered fraction of object 0's silhouette
    occluder_angle: Tensor  # (B,) bar direction, degrees
    occluder_anchor: Tensor  # (B,) disc centre as a rank in [0, 1) among object 0's silhouette samples
    occluder_rgb: Tensor  # (B, 3)
    background_kind: Tensor  # (B,) long, see background.BACKGROUND_KINDS
    background_colors: Tensor  # (B, 2, 3)
    background_params: Tensor  # (B, 4)
    floor: Tensor  # (B,) bool: a floor under y = 0 (scenes and clips)
    floor_colors: Tensor  # (B, 2, 3)

    @classmethod
    def default(cls, batch: int, objects: int = 1, device="cpu") -> Factors:
        """One grey-lit, front-viewed object of category 0 per image on a grey gradient; change what you need."""
        z = torch.zeros(batch, device=device)
        cat = torch.full((batch, objects), -1, dtype=torch.long, device=device)
        cat[:, 0] = 0
        return cls(
            category=cat,
            instance=torch.zeros(batch, objects, dtype=torch.long, device=device),
            yaw=torch.zeros(batch, objects, device=device),
            position=torch.zeros(batch, objects, 3, device=device),
            scale=torch.ones(batch, objects, device=device),
            texture_override=torch.full((batch, objects), -1, dtype=torch.long, device=device),
            azimuth=z + 30.0,
            elevation=z + 20.0,
            distance=z + 3.6,
            target=torch.zeros(batch, 3, device=device),
            shift=torch.zeros(batch, 2, device=device),
            light_azimuth=z + 45.0,
            light_elevation=z + 50.0,
            light_rgb=torch.ones(batch, 3, device=device),
            light_temperature=z + 6500.0,
            occluder_shape=torch.zeros(batch, dtype=torch.long, device=device),
            occluder_coverage=z.clone(),
            occluder_angle=z.clone(),
            occluder_anchor=z + 0.5,
            occluder_rgb=torch.full((batch, 3), 0.5, device=device),
            background_kind=torch.zeros(batch, dtype=torch.long, device=device),
            background_colors=torch.tensor([[0.55, 0.55, 0.6], [0.3, 0.3, 0.35]], device=device)
            .expand(batch, 2, 3)
            .clone(),
            background_params=torch.tensor([90.0, 3.0, 0.0, 0.0], device=device).expand(batch, 4).clone(),
            floor=torch.zeros(batch, dtype=torch.bool, device=device),
            floor_colors=torch.tensor([[0.7, 0.7, 0.68], [0.45, 0.45, 0.42]], device=device)
            .expand(batch, 2, 3)
            .clone(),
        )

    @property
    def batch_size(self) -> int:
        return self.category.shape[0]

    def to(self, device) -> Factors:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def slice(self, start: int, stop: int) -> Factors:
        return replace(self, **{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def index(self, idx: Tensor) -> Factors:
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def pad_to(self, n: int) -> Factors:
        """Repeat the last image until the batch has ``n`` images (fixed shapes keep the compiled kernel warm)."""
        extra = n - self.batch_size
        if extra <= 0:
            return self
        return replace(
            self,
            **{
                f.name: torch.cat(
                    [
                        getattr(self, f.name),
                        getattr(self, f.name)[-1:].expand(extra, *getattr(self, f.name).shape[1:]),
                    ]
                )
                for f in fields(self)
            },
        )

    @staticmethod
    def cat(items: list[Factors]) -> Factors:
        """Concatenate batches; the object dimension is padded with empty slots to the widest batch."""
        width = max(f.category.shape[1] for f in items)
        items = [f.with_objects(width) for f in items]
        return Factors(**{fl.name: torch.cat([getattr(f, fl.name) for f in items]) for fl in fields(Factors)})

    def with_objects(self, width: int) -> Factors:
        """Pad the object dimension to ``width`` empty slots (category -1)."""
        O = self.category.shape[1]
        if width <= O:
            return self
        pad = Factors.default(self.batch_size, width - O, self.category.device)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in PER_OBJECT:
                p = getattr(pad, f.name)
                if f.name == "category":
                    p = torch.full_like(p, -1)
                v = torch.cat([v, p.to(v.dtype)], 1)
            out[f.name] = v
        return Factors(**out)

    def records(self) -> dict[str, np.ndarray]:
        """Flat columns for a metadata table: per-image fields as-is, per-object fields as ``name_o``."""
        cols: dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name).detach().cpu().numpy()
            if f.name in PER_OBJECT:
                for o in range(v.shape[1]):
                    _flatten_into(cols, f"{f.name}_{o}", v[:, o])
            else:
                _flatten_into(cols, f.name, v)
        return cols

    @classmethod
    def from_records(cls, cols: dict[str, np.ndarray], objects: int) -> Factors:
        """Inverse of :meth:`records`."""
        n = len(next(iter(cols.values())))
        proto = cls.default(1, objects)
        out = {}
        for f in fields(cls):
            shape = getattr(proto, f.name).shape[1:]
            dtype = getattr(proto, f.name).dtype
            if f.name in PER_OBJECT:
                per = [_unflatten(cols, f"{f.name}_{o}", n, shape[1:]) for o in range(objects)]
                out[f.name] = torch.as_tensor(np.stack(per, 1)).to(dtype)
            else:
                out[f.name] = torch.as_tensor(_unflatten(cols, f.name, n, shape)).to(dtype)
        return cls(**out)


def _flatten_into(cols: dict, name: str, v: np.ndarray) -> None:
    if v.ndim == 1:
        cols[name] = v
    else:
        flat = v.reshape(v.shape[0], -1)
        for k in range(flat.shape[1]):
            cols[f"{name}.{k}"] = flat[:, k]


def _unflatten(cols: dict, name: str, n: int, shape: tuple) -> np.ndarray:
    if len(shape) == 0:
        return np.asarray(cols[name])
    size = int(np.prod(shape))
    return np.stack([np.asarray(cols[f"{name}.{k}"]) for k in range(size)], 1).reshape(n, *shape)
