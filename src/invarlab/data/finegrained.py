"""Fine-grained classification datasets in their official on-disk layouts (PAPERS.md §3.8): CUB-200-2011 and
Oxford Flowers-102. Each split is a map-style dataset of ``(image uint8 (3, S, S), label, index)``, decoded with
Pillow by :func:`invarlab.data.folder.load_image` (RGB, EXIF-upright, shorter side to ``resize``, centre crop to
``image_size``); ``index`` is the image's position in the dataset's own list.

CUB-200-2011 (``CUB_200_2011/``, or the folder holding it)::

    images.txt               "<image id> <class folder>/<file>.jpg"      (ids from 1)
    image_class_labels.txt   "<image id> <class id>"                     (class ids 1..200)
    train_test_split.txt     "<image id> <1 train | 0 test>"
    classes.txt              "<class id> <class folder>"                 (optional: class names)
    images/<class folder>/<file>.jpg

Flowers-102 (the folder holding)::

    jpg/image_00001.jpg ...  (8,189 images)
    imagelabels.mat          "labels": 1 x 8189, classes 1..102
    setid.mat                "trnid", "valid", "tstid": image numbers (from 1) of the train / val / test splits

Labels are 0-based (official id − 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.folder import load_image
from invarlab.errors import DataError

__all__ = ["CUB_SPLITS", "FLOWERS_SPLITS", "FinegrainedImages", "cub200", "flowers102"]

CUB_SPLITS = ("train", "test", "all")
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
FLOWERS_SPLITS = ("train", "val", "test", "train+val", "all")


class FinegrainedImages(Dataset):
    """Image files with integer labels, loaded at a fixed square size."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        image_size: int,
        resize: int | None = None,
        name: str = "",
    ) -> None:
        self.paths = list(paths)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.resize = resize
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> Tensor:
        return torch.from_numpy(self._labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        try:
            image = load_image(self.paths[i], self.image_size, self.resize)
        except _DECODE_ERRORS as err:
            raise DataError(f"{self.paths[i]}: cannot decode ({err}); replace or delete the file") from None
        return image, int(self._labels[i]), i

    def __repr__(self) -> str:
        return f"FinegrainedImages({self.name!r}, n={len(self)}, classes={self.num_classes}, size={self.image_size})"


def _table(path: Path, columns: int, layout: str) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: missing; {layout}")
    rows = [line.split(maxsplit=columns - 1) for line in path.read_text().splitlines() if line.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != columns), None)
    if bad is not None:
        raise DataError(f"{path}, line {bad + 1}: expected {columns} fields, found {rows[bad]}; {layout}")
    return rows


def _check_split(split: str, allowed: Sequence[str], dataset: str) -> None:
    if split not in allowed:
        raise DataError(f"{dataset} split {split!r} is not one of {', '.join(allowed)}")


def cub_root(root: str | os.PathLike[str]) -> Path:
    """The ``CUB_200_2011`` folder: ``root`` itself or its ``CUB_200_2011`` sub-folder."""
    root = Path(root).expanduser()
    for cand in (root, root / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand
    raise DataError(
        f"{root}: no CUB-200-2011 here (images.txt not found in it or in {root / 'CUB_200_2011'}); "
        "give the extracted CUB_200_2011 folder (docs/eval_looc.md)"
    )


def cub200(
    root: str | os.PathLike[str], split: str = "train", image_size: int = 224, resize: int | None = None
) -> FinegrainedImages:
    """CUB-200-2011 ``split`` (``train`` / ``test`` by ``train_test_split.txt``, or ``all``)."""
    _check_split(split, CUB_SPLITS, "CUB-200-2011")
    base = cub_root(root)
    layout = f"{base} must hold the official CUB_200_2011 text files and images/ (docs/eval_looc.md)"
    images = {int(i): p for i, p in _table(base / "images.txt", 2, layout)}
    labels = {int(i): int(c) for i, c in _table(base / "image_class_labels.txt", 2, layout)}
    is_train = {int(i): t == "1" for i, t in _table(base / "train_test_split.txt", 2, layout)}
    missing = sorted(set(images) - set(labels)) or sorted(set(images) - set(is_train))
    if missing:
        raise DataError(f"{base}: image id {missing[0]} has no class label or train/test flag; {layout}")
    n_classes = max(labels.values())
    classes = [str(c) for c in range(1, n_classes + 1)]
    if (base / "classes.txt").is_file():
        names = {int(c): n for c, n in _table(base / "classes.txt", 2, layout)}
        classes = [names.get(c, str(c)) for c in range(1, n_classes + 1)]
    ids = [i for i in sorted(images) if split == "all" or is_train[i] == (split == "train")]
    paths = [base / "images" / images[i] for i in ids]
    absent = next((p for p in paths if not p.is_file()), None)
    if absent is not None:
        raise DataError(f"{absent}: listed in images.txt but missing; {layout}")
    return FinegrainedImages(paths, [labels[i] - 1 for i in ids], classes, image_size, resize, f"cub-{split}")


def _mat_vector(path: Path, key: str, layout: str) -> np.ndarray:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"{path}: missing; {layout}")
    try:
        data = loadmat(path)
    except (ValueError, OSError, TypeError) as err:
        raise DataError(f"{path}: not a readable MATLAB file ({err}); {layout}") from None
    if key not in data:
        raise DataError(
            f"{path}: no variable '{key}' (has {', '.join(k for k in data if not k.startswith('__'))})"
        )
    return np.asarray(data[key]).reshape(-1).astype(np.int64)


def flowers102(
    root: str | os.PathLike[str], split: str = "train", image_size: int = 224, resize: int | None = None
) -> FinegrainedImages:
    """Flowers-102 ``split``: ``train`` / ``val`` / ``test`` (``trnid`` / ``valid`` / ``tstid`` of
    ``setid.mat``), ``train+val`` or ``all``."""
    _check_split(split, FLOWERS_SPLITS, "Flowers-102")
    base = Path(root).expanduser()
    layout = f"{base} must hold jpg/, imagelabels.mat and setid.mat as released (docs/eval_looc.md)"
    if not (base / "jpg").is_dir():
        raise DataError(f"{base / 'jpg'}: no such folder; {layout}")
    labels = _mat_vector(base / "imagelabels.mat", "labels", layout)
    keys = {"train": ("trnid",), "val": ("valid",), "test": ("tstid",), "train+val": ("trnid", "valid")}
    parts = keys.get(split, ("trnid", "valid", "tstid"))
    ids = np.sort(np.concatenate([_mat_vector(base / "setid.mat", k, layout) for k in parts]))
    if len(ids) and (ids.min() < 1 or ids.max() > len(labels)):
        raise DataError(f"{base / 'setid.mat'}: image numbers outside 1..{len(labels)}; {layout}")
    paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    absent = next((p for p in paths if not p.is_file()), None)
    if absent is not None:
        raise DataError(f"{absent}: listed in setid.mat but missing; {layout}")
    n_classes = int(labels.max())
    classes = [str(c) for c in range(1, n_classes + 1)]
    return FinegrainedImages(paths, labels[ids - 1] - 1, classes, image_size, resize, f"flowers-{split}")
