"""DAVIS-2017 semi-supervised video object segmentation, in the layout of ``DAVIS-2017-trainval-480p.zip``::

    DAVIS/JPEGImages/480p/<video>/00000.jpg ...
    DAVIS/Annotations/480p/<video>/00000.png ...   palette PNG: 0 background, k object k (255 void, if any)
    DAVIS/ImageSets/2017/{train,val}.txt           one video name per line

``root`` may be the ``DAVIS`` folder or its parent. A video is a :class:`Video`: all frames (sorted by file
name), the masks of the frames that have an annotation (matched by file stem) and which frames those are.
Listed videos without frames or without a first-frame annotation are skipped, counted in ``skipped`` and
logged; a wrong layout or nothing left raises :class:`~invarlab.errors.DataError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from invarlab.data.voc import read_index_png
from invarlab.errors import DataError

__all__ = ["DavisVideos", "Video"]

log = logging.getLogger(__name__)

_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


@dataclass
class Video:
    """One clip: ``frames`` uint8 ``(T, 3, H, W)``; ``masks`` int64 ``(T, H, W)`` (0 background, ``k`` object
    ``k``, 255 void; zeros where a frame has no annotation); ``annotated`` bool ``(T,)``."""

    name: str
    frames: Tensor
    masks: Tensor
    annotated: Tensor

    @property
    def object_ids(self) -> list[int]:
        """The objects given in the first frame (what a semi-supervised method is asked to track)."""
        ids = torch.unique(self.masks[0])
        return [int(k) for k in ids if 0 < int(k) < 255]


def _davis_base(root: Path, resolution: str) -> Path:
    if not root.is_dir():
        raise DataError(f"DAVIS root '{root}' does not exist; give the folder that holds DAVIS/JPEGImages")
    for cand in (root, root / "DAVIS"):
        if (cand / "JPEGImages" / resolution).is_dir():
            return cand
    raise DataError(
        f"'{root}' is not a DAVIS folder: expected JPEGImages/{resolution}/<video>/*.jpg, "
        f"Annotations/{resolution}/<video>/*.png and ImageSets/2017/<split>.txt in it or in DAVIS/ "
        "(the layout of DAVIS-2017-trainval-480p.zip)"
    )


class DavisVideos(Sequence[Video]):
    """The videos of a DAVIS-2017 split, loaded one at a time (``videos[i]``).

    ``size`` (optional) resizes every frame so its shorter side is ``size`` (bilinear; masks nearest), for
    cheaper runs; the benchmark's numbers are at the native 480p (``size=None``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "val",
        resolution: str = "480p",
        size: int | None = None,
    ) -> None:
        self.base = _davis_base(Path(root).expanduser(), resolution)
        self.split, self.resolution, self.size = split, resolution, size
        listing = self.base / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            have = sorted(p.stem for p in listing.parent.glob("*.txt")) if listing.parent.is_dir() else []
            raise DataError(
                f"DAVIS split file '{listing}' not found"
                + (
                    f"; splits there: {', '.join(have)}"
                    if have
                    else " (expected ImageSets/2017/{train,val}.txt)"
                )
            )
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        frames_root = self.base / "JPEGImages" / resolution
        annot_root = self.base / "Annotations" / resolution
        self.names: list[str] = []
        self.skipped: list[str] = []
        self._files: list[tuple[list[Path], dict[str, Path]]] = []
        for name in names:
            d = frames_root / name
            frames = (
                sorted(p for p in d.iterdir() if p.suffix.lower() in _FRAME_EXTENSIONS) if d.is_dir() else []
            )
            a = annot_root / name
            annots = {p.stem: p for p in a.glob("*.png")} if a.is_dir() else {}
            if not frames or frames[0].stem not in annots:
                self.skipped.append(name)
                continue
            self.names.append(name)
            self._files.append((frames, annots))
        if self.skipped:
            log.warning(
                "DAVIS %s: skipped %d listed video(s) without frames or a first-frame annotation, e.g. %s",
                split,
                len(self.skipped),
                self.skipped[0],
            )
        if not self.names:
            raise DataError(
                f"DAVIS '{split}' in '{self.base}': none of the {len(names)} listed videos has frames in "
                f"{frames_root}/<video>/ and a first-frame mask in {annot_root}/<video>/"
            )

    def __len__(self) -> int:
        return len(self.names)

    def _size(self, w: int, h: int) -> tuple[int, int]:
        if not self.size:
            return w, h
        s = self.size / min(w, h)
        return max(1, round(w * s)), max(1, round(h * s))

    def __getitem__(self, i: int) -> Video:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"video {i} out of range for {len(self)} videos")
        frames, annots = self._files[i]
        images, masks, annotated = [], [], []
        size: tuple[int, int] | None = None
        for path in frames:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    size = size or self._size(*im.size)
                    if im.size != size:
                        im = im.resize(size, Image.BILINEAR, reducing_gap=None)
                    images.append(np.array(im, dtype=np.uint8))
                mask = np.zeros(images[-1].shape[:2], dtype=np.uint8)
                if path.stem in annots:
                    m = read_index_png(annots[path.stem])
                    if m.shape[::-1] != size:
                        m = np.array(Image.fromarray(m).resize(size, Image.NEAREST))
                    mask = m
            except _READ_ERRORS as err:
                raise DataError(f"'{path}' (DAVIS video {self.names[i]}): cannot read ({err})") from None
            masks.append(mask)
            annotated.append(path.stem in annots)
        return Video(
            self.names[i],
            torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.stack(masks).astype(np.int64)),
            torch.tensor(annotated),
        )

    def __repr__(self) -> str:
        return f"DavisVideos({str(self.base)!r}, split={self.split!r}, videos={len(self)}, size={self.size})"
