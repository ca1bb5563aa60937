"""MS-COCO as a training source for the dataset-bias studies (PAPERS.md §1.5, §2.3): full scene images
(scene-centric) and ground-truth boxes cropped out of them (object-centric).

Layout (as downloaded): ``annotations/instances_train2017.json`` (COCO's instances format: ``images`` with
``id`` / ``file_name``, ``annotations`` with ``image_id`` / ``category_id`` / ``bbox`` ``[x, y, w, h]`` /
``iscrowd`` / ``area``, ``categories`` with ``id`` / ``name`` / ``supercategory``) and the image folder
``train2017/`` holding the ``file_name`` s.

* :class:`CocoImages`: one sample per image that has at least one non-crowd box (``skip_empty``); its label
  is the category of its largest non-crowd box (the kNN monitor needs one label; the choice is ours).
* :class:`CocoBoxes`: one sample per non-crowd box whose width and height are at least ``min_size`` pixels
  (default 64; P1's value is not known); its label is the box's category.

Decoding follows :func:`invarlab.data.folder.load_image`: RGB, EXIF-upright (as detectron2 reads COCO, so
boxes line up), a box crop for :class:`CocoBoxes`, shorter side to ``resize`` (default ``image_size``),
centre crop to ``image_size``. A file that fails to decode is replaced by the next sample (counted and
logged), as for image folders. Categories are numbered ``0..C−1`` in ascending COCO id; ``class_groups``
maps each supercategory to its category names (domain-specific subsets: ``classes=[animal]``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.positions import Positioned
from invarlab.errors import DataError

__all__ = ["CocoBoxes", "CocoImages", "read_coco"]

log = logging.getLogger(__name__)

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The instances JSON, checked for the keys used here; a missing or malformed file raises
    :class:`DataError` naming it."""
    path = Path(path).expanduser()
    fix = (
        "give data.annotations the instances JSON of the COCO download (annotations/instances_train2017.json)"
    )
    if not path.is_file():
        raise DataError(f"COCO annotation file '{path}' does not exist; {fix}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); re-download it; {fix}") from None
    for key, fields in (
        ("images", ("id", "file_name")),
        ("annotations", ("image_id", "category_id", "bbox")),
        ("categories", ("id", "name")),
    ):
        items = data.get(key) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise DataError(f"{path}: no '{key}' list; not a COCO instances file ({fix})")
        for item in items[:1] + items[-1:]:
            missing = [f for f in fields if f not in item]
            if missing:
                raise DataError(f"{path}: '{key}' entries lack {missing}; not a COCO instances file ({fix})")
    return data


class _CocoBase(Positioned, Dataset):
    """Shared by both sources: samples ``(file, box or None, label)``; the dataset API of FolderDataset."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        annotations: str | os.PathLike[str],
        image_size: int,
        resize: int | None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"COCO image folder '{self.root}' does not exist; give data.root the folder holding the "
                "images the annotation file names (e.g. train2017/)"
            )
        self.annotation_file = Path(annotations).expanduser()
        data = read_coco(self.annotation_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.classes = [str(c["name"]) for c in cats]
        self.class_groups: dict[str, list[str]] = {}
        for c in cats:
            self.class_groups.setdefault(str(c.get("supercategory", "")), []).append(str(c["name"]))
        self.class_groups.pop("", None)
        self._cat_index = {cid: i for i, cid in enumerate(self.category_ids)}
        self._images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        self.image_size, self.resize = int(image_size), resize
        self.load_failures = 0
        self._data = data

    def _category(self, ann: dict[str, Any]) -> int:
        try:
            return self._cat_index[int(ann["category_id"])]
        except KeyError:
            raise DataError(
                f"{self.annotation_file}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                "which 'categories' does not list; the file is damaged, re-download it"
            ) from None

    def _finish(
        self, files: list[str], boxes: list[Sequence[float] | None], labels: list[int], what: str
    ) -> None:
        del self._data  # the JSON can be large; keep only what the samples need
        if not files:
            raise DataError(f"{self.annotation_file}: no {what} to train on")
        missing = [f for f in dict.fromkeys(files) if not (self.root / f).is_file()]
        if missing:
            raise DataError(
                f"COCO image '{self.root / missing[0]}' is missing ({len(missing)} of the files the annotations "
                "name are); data.root must be the image folder matching the annotation file"
            )
        self.files = files
        self.boxes = boxes
        self._labels = np.asarray(labels, dtype=np.int64)
        self.positions = np.arange(len(files))

    def _load(self, j: int) -> Tensor:
        with Image.open(self.root / self.files[j]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            box = self.boxes[j]
            if box is not None:
                x, y, w, h = box
                im = im.crop((x, y, x + w, y + h))
            return _fit(im, self.image_size, self.resize)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        n = len(self)
        for attempt in range(min(n, 16)):
            j = int(self.positions[(i + attempt) % n])
            try:
                return self._load(j), int(self._labels[j]), j
            except _DECODE_ERRORS as err:
                self.load_failures += 1
                log.warning("%s: cannot decode (%s); using the next sample instead", self.files[j], err)
        raise DataError(f"COCO '{self.root}': 16 files in a row failed to decode near index {i}")


def _fit(im: Image.Image, image_size: int, resize: int | None) -> Tensor:
    """Shorter side to ``resize`` (default ``image_size``), bilinear, then the centre ``image_size`` square."""
    resize = resize or image_size
    w, h = im.size
    scale = resize / max(1, min(w, h))
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    arr = np.asarray(im.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class CocoImages(_CocoBase):
    """Full COCO scene images ``(image uint8 (3, S, S), label, index)``; label = category of the largest
    non-crowd box. ``skip_empty=False`` keeps images without boxes too, with label ``-1``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        annotations: str | os.PathLike[str],
        image_size: int,
        resize: int | None = None,
        skip_empty: bool = True,
    ) -> None:
        super().__init__(root, annotations, image_size, resize)
        largest: dict[int, tuple[float, int]] = {}
        for a in self._data["annotations"]:
            if a.get("iscrowd", 0):
                continue
            w, h = a["bbox"][2:4]
            area = float(a.get("area", w * h))
            img = int(a["image_id"])
            if img not in largest or area > largest[img][0]:
                largest[img] = (area, self._category(a))
        ids = sorted(i for i in self._images if not skip_empty or i in largest)
        self.image_ids = np.asarray(ids, dtype=np.int64)
        labels = [largest[i][1] if i in largest else -1 for i in ids]
        self._finish([self._images[i] for i in ids], [None] * len(ids), labels, "images with boxes")

    def __repr__(self) -> str:
        return f"CocoImages({str(self.root)!r}, n={len(self)}, classes={self.num_classes}, size={self.image_size})"


class CocoBoxes(_CocoBase):
    """Ground-truth boxes cut out of COCO images ``(image uint8 (3, S, S), category, index)``: non-crowd
    boxes (``include_crowd`` adds crowd boxes) with width and height ≥ ``min_size`` pixels."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        annotations: str | os.PathLike[str],
        image_size: int,
        min_size: float = 64,
        resize: int | None = None,
        include_crowd: bool = False,
    ) -> None:
        super().__init__(root, annotations, image_size, resize)
        files, boxes, labels, ann_ids = [], [], [], []
        anns = sorted(self._data["annotations"], key=lambda a: (int(a["image_id"]), a.get("id", 0)))
        for a in anns:
            if a.get("iscrowd", 0) and not include_crowd:
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w < min_size or h < min_size:
                continue
            img = int(a["image_id"])
            if img not in self._images:
                raise DataError(f"{self.annotation_file}: annotation {a.get('id')} names unknown image {img}")
            files.append(self._images[img])
            boxes.append((x, y, w, h))
            labels.append(self._category(a))
            ann_ids.append(int(a.get("id", -1)))
        self.annotation_ids = np.asarray(ann_ids, dtype=np.int64)
        self.min_size = min_size
        self._finish(files, boxes, labels, f"boxes of at least {min_size} x {min_size} pixels")

    def __repr__(self) -> str:
        return (
            f"CocoBoxes({str(self.root)!r}, n={len(self)}, classes={self.num_classes}, "
            f"min_size={self.min_size}, size={self.image_size})"
        )
