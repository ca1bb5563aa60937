"""ImageNet-style class folders: ``root/<class>/**/<image>``, decoded with Pillow to fixed-size ``uint8`` CHW.

Each image is converted to RGB (greyscale, palette, RGBA and CMYK files all work), turned upright by its EXIF
orientation, resized so its shorter side is ``resize`` (bilinear, antialiased) and centre-cropped to
``image_size`` square. Random crops and the rest of the augmentation happen later, batched on the device.

Corrupt or unreadable files are skipped: at scan time (when ``verify``: Pillow must identify the file from its
header) and at load time (a file that fails to decode is replaced by the next readable sample, so the dataset
length and the data order stay fixed). Both are counted and logged. An empty or missing root, or a root in
which no file is readable, raises :class:`~invarlab.errors.DataError` naming the path and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.positions import Positioned
from invarlab.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "FolderDataset", "load_image"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(path: str | os.PathLike[str], image_size: int, resize: int | None = None) -> Tensor:
    """One file as ``uint8`` ``(3, image_size, image_size)``: RGB, EXIF-upright, shorter side to ``resize``
    (default ``image_size``), centre crop. Raises Pillow's / the OS's error for an unreadable file."""
    resize = resize or image_size
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        scale = resize / min(w, h)
        # round, then never below the crop: a 1-pixel shortfall from rounding would make the crop pad.
        nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _readable(path: Path) -> bool:
    """Pillow identifies the format from the header (cheap: it reads a few bytes, not the pixels)."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018  (touch the header)
        return True
    except _DECODE_ERRORS:
        return False


class FolderDataset(Positioned, Dataset):
    """``(image uint8 (3, S, S), label, index)`` from ``root/<class>/...`` with classes sorted by name.

    ``classes`` fixes the class list (e.g. a validation folder takes the training folder's, so labels agree);
    a class folder missing from ``root`` is then just empty, and an unknown one is an error.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int,
        resize: int | None = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        verify: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        self.image_size = int(image_size)
        self.resize = resize
        fix = "give data.root the folder that holds one sub-folder of images per class (root/<class>/<image>)"
        if not self.root.is_dir():
            raise DataError(f"image folder '{self.root}' does not exist or is not a directory; {fix}")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is not None:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(
                    f"'{self.root}' has class folders the training classes lack: {', '.join(unknown[:5])}; "
                    "the held-out folder must use the training folder's class names"
                )
            self.classes = list(classes)
        else:
            self.classes = found
        if not self.classes:
            raise DataError(f"image folder '{self.root}' has no class sub-folders; {fix}")
        exts = tuple(e.lower() for e in extensions)
        files: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            d = self.root / name
            if d.is_dir():
                files += [
                    (p, label) for p in sorted(d.rglob("*")) if p.suffix.lower() in exts and p.is_file()
                ]
        if not files:
            raise DataError(
                f"image folder '{self.root}' has no image files ({', '.join(exts)}) in its class folders; {fix}"
            )
        self.skipped: list[Path] = []
        if verify:
            self.skipped = [p for p, _ in files if not _readable(p)]
            bad = set(self.skipped)
            files = [(p, y) for p, y in files if p not in bad]
            if self.skipped:
                log.warning(
                    "%s: skipped %d unreadable image file(s), e.g. %s",
                    self.root,
                    len(self.skipped),
                    self.skipped[0],
                )
        if not files:
            raise DataError(
                f"image folder '{self.root}': none of its {len(self.skipped)} image files can be read by Pillow; "
                "check that they are images and not truncated"
            )
        self.paths = [p for p, _ in files]
        self._labels = np.array([y for _, y in files], dtype=np.int64)
        self.positions = np.arange(len(self.paths))  # this dataset's samples, as indices into paths
        self.load_failures = 0  # files that passed the header check but failed to decode (per process)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        n = len(self)
        for attempt in range(min(n, 16)):
            j = int(self.positions[(i + attempt) % n])
            try:
                return load_image(self.paths[j], self.image_size, self.resize), int(self._labels[j]), j
            except _DECODE_ERRORS as e:
                # A truncated file can pass the header check; the next sample keeps the batch full and the
                # order deterministic (the same file always fails the same way).
                self.load_failures += 1
                log.warning("%s: cannot decode (%s); using the next image instead", self.paths[j], e)
        raise DataError(f"image folder '{self.root}': 16 files in a row failed to decode near index {i}")

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, n={len(self)}, classes={self.num_classes}, size={self.image_size})"
