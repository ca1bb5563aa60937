"""PASCAL VOC 2007 / 2012 in the devkit layout: segmentation masks and classification labels.

Layout (as extracted from ``VOCtrainval_*.tar``; ``root`` may be the ``VOC<year>`` folder itself, its parent
``VOCdevkit``, or the folder holding ``VOCdevkit``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png      palette PNG: 0 background, 1..20 classes, 255 void (object borders)
    VOC2012/SegmentationObject/<id>.png     palette PNG: 0 background, 1..n objects, 255 void
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOC2007/Annotations/<id>.xml            objects: <name>, <difficult>
    VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

Mask PNGs are read as palette indices; a mask saved as RGB (some converted copies are) is mapped back
through the VOC colour map, an unknown colour becoming 255 (void). Listed ids whose files are missing or
unreadable are skipped, counted in ``skipped`` and logged; a wrong layout or an empty result raises
:class:`~invarlab.errors.DataError` naming the path and what VOC expects there.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.folder import load_image
from invarlab.errors import DataError

__all__ = [
    "IGNORE_INDEX",
    "SEGMENTATION_CLASSES",
    "VOC_CLASSES",
    "SegmentationSample",
    "VOCClassification",
    "VOCSegmentation",
    "find_voc_root",
    "read_index_png",
    "voc_palette",
]

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)
IGNORE_INDEX = 255
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


class SegmentationSample(NamedTuple):
    """One image with its masks: ``image`` uint8 ``(3, H, W)``; ``classes`` int64 ``(H, W)`` (0 background,
    ``c`` class ``c``, 255 ignore); ``objects`` int64 ``(H, W)`` (0 background, ``k`` object ``k``, 255
    ignore) or None when the dataset has no instance masks."""

    image: Tensor
    classes: Tensor
    objects: Tensor | None


def voc_palette() -> np.ndarray:
    """The VOC colour map ``(256, 3)`` uint8: index ``i``'s bits ``b0 b1 b2`` go to the most significant free
    bit of red, green and blue, then the next three bits to the next bit down, and so on."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for shift in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << shift
            c >>= 3
        pal[i] = rgb
    return pal


def read_index_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Palette indices ``(H, W)`` uint8 of a mask PNG (palette or greyscale; RGB through the VOC colours)."""
    with Image.open(path) as im:
        if im.mode in ("P", "L"):
            return np.array(im, dtype=np.uint8)
        if im.mode in ("RGB", "RGBA"):
            rgb = np.array(im.convert("RGB"), dtype=np.int64)
            code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            pal = voc_palette().astype(np.int64)
            known = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
            order = np.argsort(known)
            pos = np.searchsorted(known[order], code).clip(max=255)
            return np.where(known[order][pos] == code, order[pos], IGNORE_INDEX).astype(np.uint8)
        arr = np.array(im)
    if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"mask mode {im.mode} with values outside 0..255")
    return arr.astype(np.uint8)


def find_voc_root(root: str | os.PathLike[str], year: str) -> Path:
    """The ``VOC<year>`` folder under ``root`` (``root`` itself, ``root/VOC<year>`` or
    ``root/VOCdevkit/VOC<year>``): the first that holds ``JPEGImages``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"VOC root '{root}' does not exist; give the folder that holds VOCdevkit/VOC{year}")
    for cand in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise DataError(
        f"'{root}' is not a VOC{year} folder: expected JPEGImages/ (with ImageSets/, SegmentationClass/ or "
        f"Annotations/) in it, in VOC{year}/ or in VOCdevkit/VOC{year}/ (the layout of VOCtrainval_*.tar)"
    )


def _read_ids(base: Path, kind: str, split: str) -> list[str]:
    path = base / "ImageSets" / kind / f"{split}.txt"
    if not path.is_file():
        folder = path.parent
        have = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise DataError(
            f"VOC split file '{path}' not found; "
            + (f"splits there: {', '.join(have)}" if have else f"'{folder}' holds no split lists")
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split file '{path}' lists no image ids")
    return ids


def _report_skipped(what: str, skipped: list[str], reason: str) -> None:
    if skipped:
        log.warning("%s: skipped %d listed item(s) (%s), e.g. %s", what, len(skipped), reason, skipped[0])


class VOCSegmentation(Dataset):
    """Images with class masks (and object masks with ``objects=True``) of a VOC segmentation split.

    ``size`` (optional) resizes every image to ``size x size`` (bilinear) and its masks likewise (nearest),
    so samples stack into batches; ``None`` keeps each image's own size. ``dataset[i]`` is ``(image, -1, i)``
    (the dataset protocol of :mod:`invarlab.data`; a segmentation image has no single label) and
    :meth:`sample` gives the image with its masks.
    """

    num_classes = len(SEGMENTATION_CLASSES)
    class_names = SEGMENTATION_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        year: str = "2012",
        size: int | None = None,
        objects: bool = False,
    ) -> None:
        self.base = find_voc_root(root, str(year))
        self.split, self.size, self.objects = split, size, objects
        needed = ["SegmentationClass"] + (["SegmentationObject"] if objects else [])
        for sub in needed:
            if not (self.base / sub).is_dir():
                raise DataError(
                    f"'{self.base}' has no {sub}/ folder: VOC{year} segmentation needs {', '.join(needed)} "
                    "(VOC2012 trainval, or VOC2007 trainval with segmentation)"
                )
        self.ids: list[str] = []
        self.skipped: list[str] = []
        for i in _read_ids(self.base, "Segmentation", split):
            files = [self._image(i), self.base / "SegmentationClass" / f"{i}.png"]
            if objects:
                files.append(self.base / "SegmentationObject" / f"{i}.png")
            (self.ids if all(f.is_file() for f in files) else self.skipped).append(i)
        _report_skipped(f"VOC{year} {split}", self.skipped, "image or mask file missing")
        if not self.ids:
            raise DataError(
                f"VOC{year} '{split}' in '{self.base}': none of the {len(self.skipped)} listed ids has both "
                "JPEGImages/<id>.jpg and SegmentationClass/<id>.png"
            )

    def _image(self, i: str) -> Path:
        return self.base / "JPEGImages" / f"{i}.jpg"

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, path: Path, mask: bool) -> Tensor:
        try:
            if mask:
                arr = read_index_png(path)
                if self.size:
                    arr = np.array(Image.fromarray(arr).resize((self.size,) * 2, Image.NEAREST))
                return torch.from_numpy(arr.astype(np.int64))
            with Image.open(path) as im:
                im = im.convert("RGB")
                if self.size:
                    im = im.resize((self.size,) * 2, Image.BILINEAR, reducing_gap=None)
                return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        except _READ_ERRORS as err:
            raise DataError(f"'{path}': cannot read ({err}); re-extract the VOC archive") from None

    def sample(self, i: int) -> SegmentationSample:
        """Image ``i`` with its class mask (and object mask when the dataset was opened with ``objects``)."""
        name = self.ids[i]
        image = self._load(self._image(name), mask=False)
        classes = self._load(self.base / "SegmentationClass" / f"{name}.png", mask=True)
        objects = self._load(self.base / "SegmentationObject" / f"{name}.png", True) if self.objects else None
        if classes.shape != image.shape[1:]:
            raise DataError(
                f"'{self.base}/SegmentationClass/{name}.png' is {tuple(classes.shape)}, its image "
                f"{tuple(image.shape[1:])}: masks must match their JPEG's size"
            )
        return SegmentationSample(image, classes, objects)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self._load(self._image(self.ids[i]), mask=False), -1, i

    def __repr__(self) -> str:
        return f"VOCSegmentation({str(self.base)!r}, split={self.split!r}, n={len(self)}, size={self.size})"


class VOCClassification(Dataset):
    """Images of a VOC ``ImageSets/Main`` split with multi-label targets from ``Annotations/<id>.xml``.

    :attr:`targets` is ``(N, 20)`` int64 in VOC's convention, as :func:`invarlab.eval.svm.voc07_svm` takes
    it: 1 where the class has a non-difficult object, 0 where all its objects are "difficult", -1 where it is
    absent. Images are loaded like :class:`~invarlab.data.FolderDataset` (shorter side to ``resize``, centre
    crop ``image_size``; P2's SVM protocol: 256 then 224); ``dataset[i]`` is ``(image, label, i)`` with
    ``label`` the first present class (or -1).
    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "trainval",
        year: str = "2007",
        image_size: int = 224,
        resize: int | None = 256,
    ) -> None:
        self.base = find_voc_root(root, str(year))
        self.split, self.image_size, self.resize = split, image_size, resize
        if not (self.base / "Annotations").is_dir():
            raise DataError(
                f"'{self.base}' has no Annotations/ folder: VOC classification reads <id>.xml there"
            )
        lookup = {c: k for k, c in enumerate(VOC_CLASSES)}
        self.ids: list[str] = []
        self.skipped: list[str] = []
        rows: list[np.ndarray] = []
        unknown: set[str] = set()
        for i in _read_ids(self.base, "Main", split):
            xml = self.base / "Annotations" / f"{i}.xml"
            if not (self.base / "JPEGImages" / f"{i}.jpg").is_file() or not xml.is_file():
                self.skipped.append(i)
                continue
            try:
                objs = ET.parse(xml).getroot().findall("object")
            except ET.ParseError:
                self.skipped.append(i)
                continue
            row = -np.ones(len(VOC_CLASSES), dtype=np.int64)
            for obj in objs:
                name = (obj.findtext("name") or "").strip().lower()
                if name not in lookup:
                    unknown.add(name)
                    continue
                difficult = (obj.findtext("difficult") or "0").strip() == "1"
                row[lookup[name]] = max(row[lookup[name]], 0 if difficult else 1)
            self.ids.append(i)
            rows.append(row)
        _report_skipped(f"VOC{year} {split}", self.skipped, "image or annotation missing or unreadable")
        if unknown:
            log.warning("VOC%s %s: objects of unknown classes ignored: %s", year, split, sorted(unknown)[:5])
        if not self.ids:
            raise DataError(
                f"VOC{year} '{split}' in '{self.base}': none of the {len(self.skipped)} listed ids has both "
                "JPEGImages/<id>.jpg and a readable Annotations/<id>.xml"
            )
        self.targets = torch.from_numpy(np.stack(rows))

    @property
    def labels(self) -> Tensor:
        """The first present class of each image (-1 when none is)."""
        present = self.targets > 0
        return torch.where(present.any(1), present.long().argmax(1), -1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        path = self.base / "JPEGImages" / f"{self.ids[i]}.jpg"
        try:
            image = load_image(path, self.image_size, self.resize)
        except _READ_ERRORS as err:
            raise DataError(f"'{path}': cannot read ({err}); re-extract the VOC archive") from None
        return image, int(self.labels[i]), i

    def __repr__(self) -> str:
        return f"VOCClassification({str(self.base)!r}, split={self.split!r}, n={len(self)})"
