"""A map-style dataset over a rendered world dataset (:class:`invarlab.world.store.RenderedDataset`).

Images come straight from the store's read-only memmap (``uint8`` ``(N, 3, H, W)``), so opening costs nothing
and DataLoader workers share the pages. The label is one metadata column (the category of object 0 by
default; ``crop_category`` for cropped boxes); every other factor stays available through :attr:`meta`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.errors import DataError

__all__ = ["WorldDataset", "label_column"]

# The label column in order of preference: a cropped box's own category first, else object 0's category.
_LABEL_COLUMNS = ("crop_category", "category_0", "category")


def label_column(meta: Mapping[str, np.ndarray], label: str = "auto") -> str:
    """The metadata column used as the label: ``label`` itself, or with ``"auto"`` the first present of
    ``crop_category``, ``category_0``, ``category``."""
    if label != "auto":
        if label not in meta:
            raise DataError(
                f"label column '{label}' is not in the world dataset's metadata; "
                f"available: {', '.join(sorted(meta)[:20])}, ..."
            )
        return label
    for name in _LABEL_COLUMNS:
        if name in meta:
            return name
    raise DataError(
        f"no category column in the world dataset's metadata ({', '.join(sorted(meta)[:10])}, ...)"
    )


class WorldDataset(Dataset):
    """``(image uint8 (3, H, W), label, index)`` over a rendered dataset, optionally a subset of it.

    ``indices`` picks a subset (e.g. the train part of :func:`invarlab.data.split_indices`); positions
    ``0..len-1`` of this dataset map to ``indices``, and the returned ``index`` is the position in the
    *rendered* dataset, so metadata lookups never depend on the split. Labels are remapped to ``0..C-1`` over
    the categories present in the whole rendered dataset (an empty slot's ``-1`` never becomes a class), or
    over ``classes`` when given (a held-out dataset takes the training set's list, so labels agree); a value
    outside the list becomes ``-1``.
    """

    def __init__(
        self,
        rendered: Any,
        indices: Sequence[int] | Tensor | None = None,
        label: str = "auto",
        classes: Sequence[int] | None = None,
    ) -> None:
        if isinstance(rendered, (str, os.PathLike)):
            from invarlab.world.store import RenderedDataset

            rendered = RenderedDataset(rendered)
        self.rendered = rendered
        n = len(rendered)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices out of range for a world dataset of {n} images")
        self.label_column = label_column(rendered.meta, label)
        raw = np.asarray(rendered.meta[self.label_column]).astype(np.int64)
        present = sorted(int(c) for c in np.unique(raw) if c >= 0)
        self.classes: list[int] = list(classes) if classes is not None else present
        lookup = {c: i for i, c in enumerate(self.classes)}
        self._labels = np.array([lookup.get(int(c), -1) for c in raw], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """A name per class: the world catalogue's category name (``mug``, ...) when the label column is a
        category, else the label value itself (so ``data.classes`` can select either way)."""
        if "category" not in self.label_column:
            return [str(c) for c in self.classes]
        from invarlab.world.catalog import CATEGORY_NAMES

        return [CATEGORY_NAMES[c] if 0 <= c < len(CATEGORY_NAMES) else str(c) for c in self.classes]

    @property
    def labels(self) -> Tensor:
        """Labels of this dataset's samples, in order (``int64``, ``-1`` where the slot was empty)."""
        return torch.from_numpy(self._labels[self.indices])

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Every metadata column restricted to this dataset's samples, in order."""
        return {k: np.asarray(v)[self.indices] for k, v in self.rendered.meta.items()}

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.rendered.images.shape[-2:])  # type: ignore[return-value]

    def subset(self, positions: Sequence[int] | Tensor) -> WorldDataset:
        """The samples at ``positions`` of this dataset, as a dataset over the same rendered entry."""
        out = WorldDataset.__new__(WorldDataset)
        out.__dict__.update(self.__dict__)
        out.indices = self.indices[np.asarray(positions, dtype=np.int64)]
        return out

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        j = int(self.indices[i])
        # np.array copies out of the read-only memmap: torch warns on (and must not write into) read-only memory.
        image = torch.from_numpy(np.array(self.rendered.images[j]))
        return image, int(self._labels[j]), j

    def __repr__(self) -> str:
        return (
            f"WorldDataset({getattr(self.rendered, 'path', '?')}, n={len(self)}, "
            f"label={self.label_column!r}, classes={self.num_classes})"
        )
