"""What the labelled sources share: labels for every sample of a full list (``_labels``), and the positions
in that list this dataset covers (``positions``), so a subset shares the list instead of copying it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["Positioned"]

T = TypeVar("T", bound="Positioned")


class Positioned:
    """Mixin: ``classes``, ``_labels`` (every sample of the full list) and ``positions`` (this dataset's)."""

    classes: list[str]
    _labels: np.ndarray
    positions: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> Tensor:
        """Labels of this dataset's samples, in order."""
        return torch.from_numpy(self._labels[self.positions])

    def subset(self: T, positions: Sequence[int] | Tensor) -> T:
        """The samples at ``positions`` of this dataset, sharing its sample list and classes (a sample's
        ``index`` stays its position in the full list)."""
        out = self.__class__.__new__(self.__class__)
        out.__dict__.update(self.__dict__)
        out.positions = self.positions[np.asarray(positions, dtype=np.int64)]
        return out

    def __len__(self) -> int:
        return len(self.positions)
