"""Invariance sets from real datasets (ALOI, GOT-10k, Pascal3D+): images grouped into *sets* (one target under
the transformation studied) and *classes*, ready for :func:`invarlab.eval.invariance.ris` (PAPERS.md §1.3-1.4).

:class:`InvarianceSets` is the dataset every builder returns: ``(image uint8 (3, S, S), class_id, index)``, with
``set_ids`` / ``class_ids`` and per-image metadata in :attr:`InvarianceSets.meta` (the layout of
:class:`invarlab.data.WorldDataset`'s ``meta``, so an evaluation reads ``meta["set_id"]`` / ``meta["class_id"]``
the same way for the world and for real data).

Images are decoded lazily with Pillow, exactly as P1's ``ListDataset`` + ``Resize((S, S))`` do: RGB, an
optional crop to a box ``(x, y, w, h)`` in pixels (Pillow rounds the corners and pads outside the image with
black), then a bilinear resize to ``S x S`` that ignores the aspect ratio. No EXIF rotation: annotation boxes
are in the stored pixel grid. A file that cannot be decoded raises :class:`~invarlab.errors.DataError`: a
replacement image would silently change the set structure the score depends on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.errors import DataError

__all__ = ["InvarianceSets", "load_resized"]

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_resized(path: str | os.PathLike[str], size: int, box: Sequence[float] | None = None) -> Tensor:
    """One file as ``uint8`` ``(3, size, size)``: RGB, cropped to ``box = (x, y, w, h)`` when given (Pillow's
    ``crop((x, y, x + w, y + h))``: corners rounded, outside the image black), resized bilinearly to
    ``size x size`` (aspect ratio not kept, as ``torchvision.transforms.Resize((size, size))`` on a PIL image).
    Raises :class:`DataError` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:
                x, y, w, h = (float(v) for v in box)
                im = im.crop((x, y, x + w, y + h))
            im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; the dataset folder is incomplete, re-extract it") from None
    except _DECODE_ERRORS as err:
        raise DataError(
            f"{path}: cannot decode the image ({err}); the file is truncated or not an image, "
            "re-extract it from the dataset archive"
        ) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class InvarianceSets(Dataset):
    """Images of one invariance dataset with their set and class: ``(image, class_id, index)``.

    ``paths`` ``(N,)`` image files; ``boxes`` ``(N, 4)`` ``(x, y, w, h)`` crops or None for whole images;
    ``set_ids`` / ``class_ids`` ``(N,)`` integers; ``class_names`` the name of each class id (index = id);
    ``extra`` further per-image columns (cover level, azimuth, ...). ``dataset`` and ``kind`` name the source
    (``aloi`` / ``viewpoint``, ...).
    """

    def __init__(
        self,
        dataset: str,
        kind: str,
        paths: Sequence[str | os.PathLike[str]],
        set_ids: Sequence[int] | np.ndarray,
        class_ids: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        size: int,
        boxes: np.ndarray | None = None,
        extra: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    ) -> None:
        n = len(paths)
        self.dataset, self.kind, self.size = dataset, kind, int(size)
        self.paths = [Path(p) for p in paths]
        self.set_ids = np.asarray(set_ids, dtype=np.int64).reshape(-1)
        self.class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        self.class_names = list(class_names)
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        self.extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        for name, col in (("set_ids", self.set_ids), ("class_ids", self.class_ids), *self.extra.items()):
            if len(col) != n:
                raise ValueError(f"{name} has {len(col)} entries for {n} images")
        if n == 0:
            raise DataError(f"{dataset} {kind}: no images were selected; check the dataset root and options")

    # ------------------------------------------------------------------------------------------------ dataset
    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        box = None if self.boxes is None else self.boxes[i]
        return load_resized(self.paths[i], self.size, box), int(self.class_ids[i]), int(i)

    @property
    def labels(self) -> Tensor:
        return torch.from_numpy(self.class_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Per-image columns: ``set_id``, ``class_id`` and the source's extras."""
        return {"set_id": self.set_ids, "class_id": self.class_ids, **self.extra}

    # ------------------------------------------------------------------------------------------------ summary
    def summary(self) -> dict[str, int]:
        """Counts: images, sets, classes, and sets RIS scores (at least 3 images)."""
        _, sizes = np.unique(self.set_ids, return_counts=True)
        return {
            "images": len(self),
            "sets": len(sizes),
            "scored_sets": int((sizes >= 3).sum()),
            "classes": len(np.unique(self.class_ids)),
            "set_size_min": int(sizes.min()),
            "set_size_max": int(sizes.max()),
        }

    def image_key(self) -> str:
        """A short hash of the image list (files, crops, size): two datasets with the same key hold the same
        images in the same order, so their features can be cached under one name."""
        h = hashlib.sha1(f"{self.size}".encode())
        for i, p in enumerate(self.paths):
            h.update(str(p.resolve() if not p.is_absolute() else p).encode())
            if self.boxes is not None:
                h.update(self.boxes[i].tobytes())
        return h.hexdigest()[:12]

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"InvarianceSets({self.dataset}/{self.kind}, images={s['images']}, sets={s['sets']}, "
            f"classes={s['classes']}, size={self.size})"
        )
