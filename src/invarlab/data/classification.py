"""Labelled image classification sets in the layouts they are distributed in, for evaluation on a user's data.

Every split is a map-style dataset of ``(image uint8 (3, H, W), label, index)`` with ``labels``, ``classes`` and
``identity`` (a short hash of the image list and labels: feature caches are keyed by it, so two folders with the
same split name never share a cache). Layouts:

* **ImageFolder** (``train_root/<class>/**/<image>``, ``test_root/<class>/...``): :class:`FolderDataset`; the
  test folder takes the training folder's classes, and a class the training folder lacks is an error.
* **ImageNet** (``root/train/<wnid>/*.JPEG`` and ``root/val``): ``val`` is either class folders, or flat
  (``val/ILSVRC2012_val_00000001.JPEG`` ...) with a label file: Kaggle's ``LOC_val_solution.csv`` (``ImageId,
  PredictionString``, the first word of the string is the wnid), the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, in file-name order) with
  ``ILSVRC2012_devkit_t12/data/meta.mat`` (``synsets``: ILSVRC2012_ID -> WNID), or a text file of
  ``<file> <wnid or class index>`` lines.
* **CIFAR-10 / CIFAR-100** as distributed (``cifar-10-batches-py/``: pickled ``data_batch_1..5``, ``test_batch``,
  ``batches.meta``; ``cifar-100-python/``: ``train``, ``test``, ``meta``, fine labels): ``data`` rows are 3,072
  bytes, the R, G and B planes of a 32 x 32 image, each row-major.
* **STL-10 binary** (``stl10_binary/``: ``train_X.bin`` / ``test_X.bin`` of 3 x 96 x 96 bytes per image, each
  plane column-major; ``train_y.bin`` / ``test_y.bin`` labels 1..10; ``class_names.txt``), read through a
  memory map so an evaluation holds only the batch it decodes.

``root`` may be the distributed folder itself or the folder that holds it. Array sets keep their native size
(32 or 96 px); feature extraction resizes to the evaluation's image size.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.finegrained import FinegrainedImages
from invarlab.data.folder import IMAGE_EXTENSIONS, FolderDataset
from invarlab.data.positions import Positioned
from invarlab.errors import DataError

__all__ = [
    "ARRAY_SOURCES",
    "CLASSIFICATION_DATASETS",
    "ArrayImages",
    "array_split",
    "cifar",
    "classification_pair",
    "dataset_identity",
    "folder_pair",
    "identity_of",
    "imagenet",
    "stl10",
]

log = logging.getLogger(__name__)

CLASSIFICATION_DATASETS = ("folder", "imagenet", "cifar10", "cifar100", "stl10")
SPLITS = ("train", "test")


def identity_of(*parts: object) -> str:
    """First 10 hex digits of the SHA-256 of ``parts`` (file lists, labels, sizes) as text."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(part.tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:10]


class ArrayImages(Positioned, Dataset):
    """Images held as a ``uint8`` array ``(N, 3, H, W)`` (or a memory map of another layout, converted per
    item by ``to_chw``), with integer labels."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        identity: str,
        name: str = "",
        column_major: bool = False,
    ) -> None:
        self.images = images
        self._labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.identity = identity
        self.name = name
        self.column_major = column_major  # STL-10 stores each plane column by column
        self.positions = np.arange(len(self._labels))  # this dataset's samples, as rows of images

    def subset(self, positions: Sequence[int] | Tensor) -> ArrayImages:
        out = super().subset(positions)
        out.identity = identity_of(self.identity, out.positions)
        return out

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        j = int(self.positions[i])
        image = np.asarray(self.images[j])
        if self.column_major:
            image = image.transpose(0, 2, 1)
        return torch.from_numpy(np.ascontiguousarray(image)), int(self._labels[j]), j

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"ArrayImages({self.name!r}, n={len(self)}, classes={self.num_classes}, image={shape})"


ARRAY_SOURCES = ("cifar10", "cifar100", "stl10")


def array_split(dataset: str, root: str | os.PathLike[str], split: str) -> ArrayImages:
    """``split`` (train / test) of one of :data:`ARRAY_SOURCES`."""
    return stl10(root, split) if dataset == "stl10" else cifar(root, split, dataset)


# ------------------------------------------------------------------------------------------- ImageFolder
def folder_pair(
    train_root: str | os.PathLike[str],
    test_root: str | os.PathLike[str],
    image_size: int,
    resize: int | None = None,
) -> tuple[FolderDataset, FolderDataset]:
    """Train and test :class:`FolderDataset` with the training folder's classes (test classes must be a
    subset); :func:`dataset_identity` names each by its files and labels."""
    for what, root in (("train", train_root), ("test", test_root)):
        if not str(root):
            raise DataError(
                f"the folder dataset needs a {what} folder: give --{what}-root PATH "
                f"(eval: classify.{what}_root=PATH), a folder of <class>/<image> files"
            )
    train = FolderDataset(train_root, image_size, resize)
    try:
        test = FolderDataset(test_root, image_size, resize, classes=train.classes)
    except DataError as err:
        raise DataError(f"{err} (training folder: '{train.root}')") from None
    return train, test


def dataset_identity(dataset: Dataset) -> str:
    """A short hash naming a dataset's images and labels (its ``identity``; for a :class:`FolderDataset`,
    or a subset of one, its files, labels and decoding size)."""
    if hasattr(dataset, "identity"):
        return str(dataset.identity)
    if isinstance(dataset, FolderDataset):
        files = [str(dataset.paths[j]) for j in dataset.positions]
        return identity_of(files, dataset.labels.numpy(), dataset.image_size, dataset.resize)
    raise TypeError(f"{type(dataset).__name__} has no identity: give it one for the feature cache")


# ---------------------------------------------------------------------------------------------- ImageNet
_VAL_LABEL_FILES = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt", "val_labels.txt")


def imagenet(
    root: str | os.PathLike[str],
    image_size: int,
    resize: int | None = None,
    val_labels: str | os.PathLike[str] | None = None,
) -> tuple[FolderDataset, Dataset]:
    """``(train, val)`` of an ImageNet folder (module docstring); classes are ``train``'s wnid folders."""
    base = Path(root).expanduser()
    train_dir, val_dir = base / "train", base / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DataError(
                f"ImageNet folder '{base}' has no {d.name}/ folder: expected {base}/train/<wnid>/*.JPEG and "
                f"{base}/val (class folders, or flat with a label file such as LOC_val_solution.csv)"
            )
    train = FolderDataset(train_dir, image_size, resize)
    if any(d.is_dir() and not d.name.startswith(".") for d in val_dir.iterdir()):
        try:
            val = FolderDataset(val_dir, image_size, resize, classes=train.classes)
        except DataError as err:
            raise DataError(f"{err} (training folder: '{train_dir}')") from None
        return train, val
    files = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"ImageNet val folder '{val_dir}' holds neither class folders nor image files")
    label_file = Path(val_labels).expanduser() if val_labels else _find_val_labels(base, val_dir)
    wnid_of = _read_val_labels(label_file, files, base, train.classes)
    index = {c: k for k, c in enumerate(train.classes)}
    unknown = sorted({w for w in wnid_of.values() if w not in index})
    if unknown:
        raise DataError(
            f"{label_file}: classes {', '.join(unknown[:5])} have no folder in '{train_dir}'; the validation "
            "labels must name the training folder's classes"
        )
    labelled = [p for p in files if p.stem in wnid_of]
    missing = len(files) - len(labelled)
    if missing:
        log.warning("%s: %d image(s) have no label in %s and are left out", val_dir, missing, label_file)
    if not labelled:
        raise DataError(f"{label_file}: none of the {len(files)} images in '{val_dir}' has a label there")
    labels = np.array([index[wnid_of[p.stem]] for p in labelled], dtype=np.int64)
    val = FinegrainedImages(labelled, labels, train.classes, image_size, resize, name="imagenet val")
    val.identity = identity_of([str(p) for p in labelled], labels, image_size, resize)
    return train, val


def _find_val_labels(base: Path, val_dir: Path) -> Path:
    for folder in (base, val_dir, base / "ILSVRC2012_devkit_t12" / "data"):
        for name in _VAL_LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"ImageNet val folder '{val_dir}' is flat but no label file was found in '{base}': put "
        f"{' or '.join(_VAL_LABEL_FILES)} there (or the devkit), or pass classify.val_labels=FILE"
    )


def _read_val_labels(path: Path, files: list[Path], base: Path, classes: list[str]) -> dict[str, str]:
    """``{image stem: wnid}`` from any of the supported label files."""
    if not path.is_file():
        raise DataError(f"ImageNet val label file '{path}' does not exist")
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected Kaggle's header 'ImageId,PredictionString'")
        return {r[0].strip(): r[1].split()[0] for r in rows[1:] if len(r) >= 2 and r[1].split()}
    formats = (
        "one ILSVRC2012_ID per line (the devkit's ground truth), '<file> <wnid or class index>' lines, or "
        "Kaggle's LOC_val_solution.csv"
    )
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if lines and all(len(ln) == 1 for ln in lines):  # devkit ground truth: ILSVRC2012_IDs in file order
        if not all(ln[0].isdigit() for ln in lines):
            raise DataError(
                f"{path}: single-word lines must be ILSVRC2012_IDs (integers); accepted: {formats}"
            )
        return _devkit_labels(path, [int(ln[0]) for ln in lines], files, base)
    out = {}
    for n, words in enumerate(lines, 1):
        if len(words) != 2:
            raise DataError(f"{path}, line {n}: got {' '.join(words)!r}; accepted: {formats}")
        name, label = words
        if label.isdigit():
            if int(label) >= len(classes):
                raise DataError(
                    f"{path}, line {n}: class index {label} is out of range: the training folder has "
                    f"{len(classes)} classes (0..{len(classes) - 1})"
                )
            label = classes[int(label)]
        out[Path(name).stem] = label
    return out


def _devkit_labels(path: Path, ids: list[int], files: list[Path], base: Path) -> dict[str, str]:
    from scipy.io import loadmat

    meta = next(
        (
            p
            for p in (path.parent / "meta.mat", base / "ILSVRC2012_devkit_t12" / "data" / "meta.mat")
            if p.is_file()
        ),
        None,
    )
    if meta is None:
        raise DataError(f"{path}: devkit ground truth needs meta.mat beside it (ILSVRC2012_devkit_t12/data)")
    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    if len(ids) != len(files):
        raise DataError(
            f"{path}: {len(ids)} labels for {len(files)} images in the val folder; they must match"
        )
    unknown = sorted(set(ids) - set(wnid))
    if unknown:
        raise DataError(f"{path}: ILSVRC2012_ID(s) {unknown[:5]} are not in the synsets of {meta}")
    return {p.stem: wnid[i] for p, i in zip(files, ids, strict=True)}


# ------------------------------------------------------------------------------------------------- CIFAR
_CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}


def _locate(root: Path, folder: str, what: str, marker: str) -> Path:
    for candidate in (root, root / folder):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"'{root}' is not a {what} folder: expected {folder}/{marker} there (extract the official archive and "
        f"give its folder, or the folder that holds {folder}/)"
    )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"'{path}' is missing: re-extract the archive") from None
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise DataError(f"'{path}' is not a readable CIFAR batch ({err}); re-extract the archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"'{path}' does not hold a CIFAR batch (a dict with data and labels)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar(root: str | os.PathLike[str], split: str, variant: str = "cifar10") -> ArrayImages:
    """CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (fine labels) ``split`` ``train`` or ``test``."""
    if variant not in _CIFAR or split not in SPLITS:
        raise DataError(
            f"cifar: variant must be cifar10 or cifar100 and split train or test, got {variant}/{split}"
        )
    folder, train_files, test_files, meta_name = _CIFAR[variant]
    base = _locate(Path(root).expanduser(), folder, variant.upper(), meta_name)
    meta = _unpickle(base / meta_name)
    names_key = "label_names" if variant == "cifar10" else "fine_label_names"
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    label_key = "labels" if variant == "cifar10" else "fine_labels"
    images, labels = [], []
    for name in train_files if split == "train" else test_files:
        batch = _unpickle(base / name)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"'{base / name}' lacks 'data' or '{label_key}': not a {variant} batch")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
            raise DataError(
                f"'{base / name}': data is {data.shape}, expected (N, 3072) with one label per row"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    x, y = np.concatenate(images), np.concatenate(labels)
    if not classes:
        classes = [str(c) for c in range(int(y.max()) + 1)]
    return ArrayImages(
        x, y, classes, identity_of(variant, split, y, x[:: max(1, len(x) // 64)]), f"{variant} {split}"
    )


# ------------------------------------------------------------------------------------------------ STL-10
def stl10(root: str | os.PathLike[str], split: str) -> ArrayImages:
    """STL-10's labelled ``train`` (5,000) or ``test`` (8,000) images, memory-mapped (module docstring)."""
    if split not in SPLITS:
        raise DataError(f"stl10: split must be train or test, got {split!r}")
    base = _locate(Path(root).expanduser(), "stl10_binary", "STL-10 (binary)", f"{split}_X.bin")
    x_path, y_path = base / f"{split}_X.bin", base / f"{split}_y.bin"
    if not y_path.is_file():
        raise DataError(
            f"'{y_path}' is missing: STL-10's labelled splits need <split>_y.bin beside <split>_X.bin"
        )
    y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    image_bytes = 3 * 96 * 96
    size = x_path.stat().st_size
    if size != len(y) * image_bytes:
        raise DataError(
            f"'{x_path}' holds {size} bytes: {len(y)} labels in {y_path.name} need {len(y) * image_bytes} "
            "(3 x 96 x 96 per image); re-extract the archive"
        )
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"'{y_path}': labels must be 1..10, found {y.min() + 1}..{y.max() + 1}")
    x = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(len(y), 3, 96, 96))
    names = base / "class_names.txt"
    classes = names.read_text().split() if names.is_file() else [str(c) for c in range(10)]
    return ArrayImages(
        x, y, classes, identity_of("stl10", split, size, y), f"stl10 {split}", column_major=True
    )


# ------------------------------------------------------------------------------------------------ factory
def classification_pair(
    dataset: str,
    *,
    image_size: int,
    root: str = "",
    train_root: str = "",
    test_root: str = "",
    resize: int | None = None,
    val_labels: str = "",
) -> tuple[Dataset, Dataset]:
    """``(train, test)`` of classification ``dataset`` (one of :data:`CLASSIFICATION_DATASETS`); folder and
    ImageNet images are decoded at ``image_size`` (shorter side to ``resize`` first)."""
    if dataset not in CLASSIFICATION_DATASETS:
        raise DataError(
            f"unknown classification dataset {dataset!r}: use world or {', '.join(CLASSIFICATION_DATASETS)}"
        )
    if dataset == "folder":
        return folder_pair(train_root, test_root, image_size, resize)
    if not root:
        raise DataError(
            f"--dataset {dataset} needs --root PATH (eval: classify.root=PATH), the dataset's folder"
        )
    if dataset == "imagenet":
        return imagenet(root, image_size, resize, val_labels or None)
    return array_split(dataset, root, "train"), array_split(dataset, root, "test")
