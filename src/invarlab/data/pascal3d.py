"""Pascal3D+ instance and instance+viewpoint sets, as P1 builds them (PAPERS.md §1.4, official
``extract_pascal3d_features.py``).

Layout (``PASCAL3D+_release1.1``; the root may be that folder or its parent)::

    Image_sets/<cls>_imagenet_train.txt, <cls>_imagenet_val.txt   image names, one per line
    Image_sets/<cls>_pascal.txt                                    "<name> <object index>" per line
    Images/<cls>_imagenet/<name>.JPEG      Annotations/<cls>_imagenet/<name>.mat
    Images/<cls>_pascal/<name>.jpg         Annotations/<cls>_pascal/<name>.mat

An annotation file holds ``record.objects(k).bbox`` ``[x1 y1 x2 y2]`` and
``record.objects(k).viewpoint.azimuth_coarse`` / ``elevation_coarse`` (degrees); they are read with
``scipy.io.loadmat``.

Images, in P1's order: for each class (sorted names of the ``*_imagenet_train.txt`` lists), the ImageNet train
then val names with object 0; then (``pascal`` subset) for each class the ``<cls>_pascal.txt`` entries with
their object index. Each image is cropped to its box ``(x1, y1, x2 − x1, y2 − y1)`` and resized to
``size x size`` (P1: 224). The class is the category (C = 12, so the firing percentile is 91.67).

Bins: ``az_bin = (azimuth mod 180) // 30`` (6 bins), ``el_bin = (elevation mod 90) // 30`` (3 bins), with
floored ``mod`` (``-10 mod 90 = 80``).

* ``instance`` (viewpoint constant, instance changes): within a class, one set per distinct
  ``(az_bin, el_bin)`` pair (pairs numbered in sorted order, then offset past the previous classes' sets).
* ``instance_viewpoint``: within a class the ``k``-th image of azimuth bin ``b`` (in image order) gets set
  ``base + k``, where ``base`` is the largest per-bin counter reached in the classes before; a set holds at
  most one image per azimuth bin, i.e. up to 6 instances at 6 viewpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from invarlab.data.sets import InvarianceSets
from invarlab.errors import DataError

__all__ = [
    "PASCAL3D_KINDS",
    "azimuth_bin",
    "elevation_bin",
    "instance_set_ids",
    "instance_viewpoint_set_ids",
    "pascal3d_sets",
    "read_annotation",
]

log = logging.getLogger(__name__)

PASCAL3D_KINDS = ("instance", "instance_viewpoint")
SUBSETS = ("imagenet", "pascal")


def azimuth_bin(azimuth: np.ndarray | Sequence[float]) -> np.ndarray:
    """``(a mod 180) // 30`` in ``0..5`` (front and back views share a bin)."""
    return (np.mod(np.asarray(azimuth, dtype=np.float64), 180.0) // 30).astype(np.int64)


def elevation_bin(elevation: np.ndarray | Sequence[float]) -> np.ndarray:
    """``(e mod 90) // 30`` in ``0..2``, floored ``mod``."""
    return (np.mod(np.asarray(elevation, dtype=np.float64), 90.0) // 30).astype(np.int64)


def instance_set_ids(class_ids: np.ndarray, azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Set of every image for the ``instance`` sets: per class (ascending), the index of its
    ``(az_bin, el_bin)`` among the class's sorted distinct pairs, plus the number of pairs of the classes
    before."""
    class_ids = np.asarray(class_ids)
    angles = np.stack([azimuth_bin(azimuth), elevation_bin(elevation)], axis=1)
    out = np.zeros(len(class_ids), dtype=np.int64)
    base = 0
    for c in np.unique(class_ids):
        rows = np.where(class_ids == c)[0]
        pairs, inverse = np.unique(angles[rows], axis=0, return_inverse=True)
        out[rows] = inverse.reshape(-1) + base
        base += len(pairs)
    return out


def instance_viewpoint_set_ids(class_ids: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Set of every image for the ``instance_viewpoint`` sets: per class (ascending), every counter starts
    at the largest counter reached so far; the image gets its azimuth bin's counter, which then advances."""
    class_ids = np.asarray(class_ids)
    bins = azimuth_bin(azimuth)
    out = np.zeros(len(class_ids), dtype=np.int64)
    counter = np.zeros(6, dtype=np.int64)
    for c in np.unique(class_ids):
        counter[:] = counter.max()
        for i in np.where(class_ids == c)[0]:
            out[i] = counter[bins[i]]
            counter[bins[i]] += 1
    return out


def _field(obj: Any, name: str, path: Path) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise DataError(
            f"{path}: annotation has no '{name}' field; the file is not a Pascal3D+ release 1.1 annotation, "
            "re-extract it from PASCAL3D+_release1.1.zip"
        ) from None


def _scalar(value: Any, what: str, path: Path) -> float:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]):
        raise DataError(f"{path}: {what} is {value!r}, not one finite number; the object has no viewpoint")
    return float(arr[0])


def read_annotation(path: str | os.PathLike[str], index: int = 0) -> tuple[np.ndarray, float, float]:
    """Object ``index``'s ``bbox`` ``[x1, y1, x2, y2]``, ``azimuth_coarse`` and ``elevation_coarse`` from a
    Pascal3D+ ``.mat`` annotation; a missing or malformed file raises :class:`DataError` naming it."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: annotation file missing; re-extract Annotations/ from PASCAL3D+_release1.1.zip"
        )
    try:
        data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises several types (ValueError, MatReadError, TypeError) on bad files
        raise DataError(f"{path}: not a readable .mat file ({err}); re-extract it") from None
    if "record" not in data:
        raise DataError(f"{path}: no 'record' variable; not a Pascal3D+ annotation, re-extract it")
    objects = np.atleast_1d(_field(data["record"], "objects", path))
    if not 0 <= index < len(objects):
        raise DataError(f"{path}: object index {index} out of range (the file has {len(objects)} objects)")
    obj = objects[index]
    bbox = np.asarray(_field(obj, "bbox", path), dtype=np.float64).reshape(-1)
    if bbox.size != 4 or not np.isfinite(bbox).all():
        raise DataError(f"{path}: object {index} bbox is {bbox.tolist()}, not [x1 y1 x2 y2]")
    vp = _field(obj, "viewpoint", path)
    if isinstance(vp, np.ndarray):  # an empty viewpoint loads as an empty array
        if vp.size == 0:
            raise DataError(f"{path}: object {index} has no viewpoint annotation")
        vp = vp.reshape(-1)[0]
    az = _scalar(_field(vp, "azimuth_coarse", path), "azimuth_coarse", path)
    el = _scalar(_field(vp, "elevation_coarse", path), "elevation_coarse", path)
    return bbox, az, el


def find_pascal3d_dir(root: str | os.PathLike[str]) -> Path:
    root = Path(root).expanduser()
    for folder in (root, root / "PASCAL3D+_release1.1", root / "pascal3d"):
        if (folder / "Image_sets").is_dir() and (folder / "Annotations").is_dir():
            return folder
    raise DataError(
        f"Pascal3D+: no Image_sets/ and Annotations/ under '{root}'; give --root the unzipped "
        "PASCAL3D+_release1.1 folder (ftp://cs.stanford.edu/cs/cvgl/PASCAL3D+_release1.1.zip)"
    )


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: image list missing; re-extract Image_sets/ from PASCAL3D+_release1.1.zip")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _entries(
    folder: Path, classes: Sequence[str], subsets: Sequence[str]
) -> list[tuple[str, Path, Path, int]]:
    """``(class, image, annotation, object index)`` in P1's order."""
    out = []
    if "imagenet" in subsets:
        for cls in classes:
            for split in ("train", "val"):
                for name in _lines(folder / "Image_sets" / f"{cls}_imagenet_{split}.txt"):
                    out.append(
                        (
                            cls,
                            folder / "Images" / f"{cls}_imagenet" / f"{name}.JPEG",
                            folder / "Annotations" / f"{cls}_imagenet" / f"{name}.mat",
                            0,
                        )
                    )
    if "pascal" in subsets:
        for cls in classes:
            listing = folder / "Image_sets" / f"{cls}_pascal.txt"
            if not listing.is_file():
                raise DataError(
                    f"{listing}: missing; the PASCAL subset needs '<name> <object index>' lines per class "
                    "(P1's lists), or leave it out with subsets=[imagenet]"
                )
            for line in _lines(listing):
                parts = line.split()
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise DataError(f"{listing}: line {line!r} is not '<name> <object index>'")
                out.append(
                    (
                        cls,
                        folder / "Images" / f"{cls}_pascal" / f"{parts[0]}.jpg",
                        folder / "Annotations" / f"{cls}_pascal" / f"{parts[0]}.mat",
                        int(parts[1]),
                    )
                )
    return out


def pascal3d_sets(
    root: str | os.PathLike[str],
    size: int = 224,
    subsets: Sequence[str] = SUBSETS,
    classes: Sequence[str] = (),
) -> dict[str, InvarianceSets]:
    """Both P1 Pascal3D+ set kinds over the same images: ``{"instance": ..., "instance_viewpoint": ...}``
    (module docstring). ``classes`` restricts the categories (default: every class with an ImageNet train
    list). Extra metadata: ``azimuth``, ``elevation`` (coarse, degrees), ``az_bin``, ``el_bin``, ``object``."""
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown or not subsets:
        raise DataError(f"Pascal3D+ subsets {list(subsets)}: use one or both of {', '.join(SUBSETS)}")
    folder = find_pascal3d_dir(root)
    found = sorted(p.name.split("_")[0] for p in (folder / "Image_sets").glob("*_imagenet_train.txt"))
    if not found:
        raise DataError(f"{folder / 'Image_sets'}: no <cls>_imagenet_train.txt lists; re-extract Image_sets/")
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(f"Pascal3D+ classes {missing} not found; available: {', '.join(found)}")
    chosen = sorted(classes) if classes else found
    entries = _entries(folder, chosen, subsets)
    if not entries:
        raise DataError(f"Pascal3D+: the image lists under '{folder / 'Image_sets'}' are empty")
    boxes, az, el = [], [], []
    for _, _, ann, index in entries:
        bbox, a, e = read_annotation(ann, index)
        boxes.append([bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]])
        az.append(a)
        el.append(e)
    paths = [image for _, image, _, _ in entries]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(
            f"{absent[0]}: image missing ({len(absent)} are); re-extract Images/ from the release zip"
        )
    class_ids = np.array([chosen.index(cls) for cls, _, _, _ in entries], dtype=np.int64)
    azimuth, elevation = np.asarray(az), np.asarray(el)
    extra = {
        "azimuth": azimuth,
        "elevation": elevation,
        "az_bin": azimuth_bin(azimuth),
        "el_bin": elevation_bin(elevation),
        "object": np.array([index for _, _, _, index in entries]),
    }
    box_arr = np.asarray(boxes, dtype=np.float64)
    sets = {
        "instance": instance_set_ids(class_ids, azimuth, elevation),
        "instance_viewpoint": instance_viewpoint_set_ids(class_ids, azimuth),
    }
    log.info("Pascal3D+: %d images of %d classes", len(paths), len(chosen))
    return {
        kind: InvarianceSets(
            "pascal3d", kind, paths, ids, class_ids, chosen, size, boxes=box_arr, extra=extra
        )
        for kind, ids in sets.items()
    }
