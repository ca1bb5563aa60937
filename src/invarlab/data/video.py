"""Video sources: folders of frames, video files (decoded with OpenCV) and the world's clips; frames decoded lazily.

A :class:`Video` gives its length, any frame at native resolution as ``uint8`` ``(H, W, 3)`` RGB, and the ground-
truth tracks it knows (boxes ``x0, y0, x1, y1`` in native pixels with a persistent track id), if any:

- :class:`FrameFolderVideo`: one folder of JPEG/PNG frames, in natural order of the file names. A GOT-10k
  ``groundtruth.txt`` (one ``x,y,w,h`` line per frame) beside the frames gives one track (id 0); frames marked
  in ``absence.label`` or with a NaN / empty box have none.
- :class:`VideoFileVideo`: a video file (``.mp4``, ``.avi``, ...), decoded with ``cv2.VideoCapture``: a seek and
  one decode per frame read, sequential decoding for a run of frames.
- :class:`WorldClipVideo`: one clip of a rendered world dataset of kind ``clips``: its frames, and its objects'
  visible-pixel boxes with the world's persistent track ids.

:class:`VideoFrames` turns a list of videos into an image dataset, ``(uint8 (3, S, S), label, index)`` per frame
(shorter side resized to ``resize``, centre crop ``S``, as :class:`~invarlab.data.folder.FolderDataset`), which
is what MoCo on "the same frames treated as independent images" trains on. Opening a source lists files and
reads container headers only; pixels are decoded when a frame is asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.folder import IMAGE_EXTENSIONS
from invarlab.errors import DataError

__all__ = [
    "VIDEO_EXTENSIONS",
    "FrameFolderVideo",
    "Video",
    "VideoFileVideo",
    "VideoFrames",
    "WorldClipVideo",
    "open_videos",
    "resize_center_crop",
    "world_clip_frames",
    "world_clip_videos",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_NO_TRACKS = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))


def _natural_key(name: str) -> list[Any]:
    """``frame2`` before ``frame10``: digit runs compare as numbers."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def resize_center_crop(frame: np.ndarray, size: int, resize: int | None = None) -> Tensor:
    """``uint8`` ``(H, W, 3)`` → ``(3, size, size)``: shorter side to ``resize`` (default ``size``, bilinear,
    antialiased by Pillow), then the centre crop, exactly as the image folders do."""
    resize = resize or size
    h, w = frame.shape[:2]
    if h == w == size == resize:  # already the right size (world clips): no resampling at all
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).contiguous()
    scale = resize / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = Image.fromarray(frame).resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class Video:
    """One video: ``num_frames`` frames of ``uint8 (H, W, 3)`` RGB, and optional ground-truth tracks.

    ``frames_decoded`` counts the frames this object has decoded (in this process), which shows that nothing
    is read before it is asked for.
    """

    name: str = ""
    num_frames: int = 0
    has_tracks: bool = False
    frames_decoded: int = 0

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` at native resolution."""
        raise NotImplementedError

    def read_range(self, start: int, stop: int) -> list[np.ndarray]:
        """Frames ``start .. stop`` (inclusive); subclasses decode a run sequentially where that is faster."""
        return [self.read(t) for t in range(start, stop + 1)]

    def tracks(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (K, 4) float32 x0, y0, x1, y1 in native pixels, ids (K,) int64)`` visible in frame ``t``."""
        return _NO_TRACKS

    def _check(self, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"{self.name}: frame {t} out of range (0..{self.num_frames - 1})")

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, frames={self.num_frames})"


def _read_got10k_boxes(folder: Path, n: int) -> np.ndarray | None:
    """``(n, 4)`` x0, y0, x1, y1 from ``groundtruth.txt`` (``x,y,w,h`` per line; NaN rows where absent)."""
    gt = folder / "groundtruth.txt"
    if not gt.is_file():
        return None
    boxes = np.full((n, 4), np.nan, np.float32)
    try:
        lines = gt.read_text().splitlines()
        for t, line in enumerate(lines[:n]):
            vals = [float(v) for v in re.split(r"[,\s]+", line.strip()) if v]
            if len(vals) >= 4 and vals[2] > 0 and vals[3] > 0:
                x, y, w, h = vals[:4]
                boxes[t] = (x, y, x + w, y + h)
    except ValueError as e:
        raise DataError(f"{gt}: expected one 'x,y,w,h' line per frame (GOT-10k layout): {e}") from None
    absence = folder / "absence.label"
    if absence.is_file():
        flags = [line.strip() for line in absence.read_text().splitlines()]
        for t, flag in enumerate(flags[:n]):
            if flag == "1":
                boxes[t] = np.nan
    return boxes


class FrameFolderVideo(Video):
    """A folder of frame images (``00000001.jpg``, ...), optionally with a GOT-10k ``groundtruth.txt``."""

    def __init__(self, folder: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.folder = Path(folder)
        exts = tuple(e.lower() for e in extensions)
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in exts and p.is_file()]
        self.paths = sorted(files, key=lambda p: _natural_key(p.name))
        if not self.paths:
            raise DataError(f"frame folder '{self.folder}' has no image files ({', '.join(exts)})")
        self.name = self.folder.name
        self.num_frames = len(self.paths)
        self.frames_decoded = 0
        self._boxes = _read_got10k_boxes(self.folder, self.num_frames)
        self.has_tracks = self._boxes is not None

    def read(self, t: int) -> np.ndarray:
        self._check(t)
        try:
            with Image.open(self.paths[t]) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except OSError as e:
            raise DataError(f"{self.paths[t]}: cannot decode frame {t} of '{self.folder}' ({e})") from None
        self.frames_decoded += 1
        return arr

    def tracks(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        self._check(t)
        if self._boxes is None or np.isnan(self._boxes[t]).any():
            return _NO_TRACKS
        return self._boxes[t : t + 1].copy(), np.zeros((1,), np.int64)


class VideoFileVideo(Video):
    """A video file decoded with OpenCV (``cv2.VideoCapture``); the capture is opened on first use in each
    process (DataLoader workers each get their own) and never pickled."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self._cap: Any = None
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise DataError(
                    f"video file '{self.path}' cannot be opened by OpenCV; convert it (e.g. ffmpeg -i IN "
                    "-c:v mjpeg OUT.avi) or extract its frames into a folder"
                )
            n = round(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if n <= 0:  # some containers do not store a count: count by grabbing (no pixel decoding)
                n = 0
                while cap.grab():
                    n += 1
        finally:
            cap.release()
        if n <= 0:
            raise DataError(f"video file '{self.path}' has no frames")
        self.num_frames = n
        self.frames_decoded = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cap"] = None
        return state

    def _capture(self) -> Any:
        if self._cap is None:
            self._cap = cv2.VideoCapture(str(self.path))
        return self._cap

    def _decode(self, cap: Any, t: int) -> np.ndarray:
        ok, bgr = cap.read()
        if not ok:
            raise DataError(f"video file '{self.path}': frame {t} of {self.num_frames} cannot be decoded")
        self.frames_decoded += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self, t: int) -> np.ndarray:
        self._check(t)
        cap = self._capture()
        cap.set(cv2.CAP_PROP_POS_FRAMES, t)
        return self._decode(cap, t)

    def read_range(self, start: int, stop: int) -> list[np.ndarray]:
        self._check(start)
        self._check(stop)
        cap = self._capture()
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        return [self._decode(cap, t) for t in range(start, stop + 1)]


class WorldClipVideo(Video):
    """One clip of a rendered world dataset: ``rows`` are its frames' rows in the store, in frame order."""

    def __init__(self, rendered: Any, rows: Sequence[int], name: str = "") -> None:
        self.rendered = rendered
        self.rows = np.asarray(rows, dtype=np.int64)
        self.name = name
        self.num_frames = len(self.rows)
        self.frames_decoded = 0
        meta = rendered.meta
        slots = sorted(int(k.split("_")[1]) for k in meta if re.fullmatch(r"track_\d+", k))
        self._ids = np.stack([np.asarray(meta[f"track_{o}"])[self.rows] for o in slots], axis=1).astype(
            np.int64
        )
        self.has_tracks = bool(slots)

    def read(self, t: int) -> np.ndarray:
        self._check(t)
        self.frames_decoded += 1
        return np.ascontiguousarray(np.asarray(self.rendered.images[self.rows[t]]).transpose(1, 2, 0))

    def tracks(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        self._check(t)
        boxes = np.asarray(self.rendered.boxes[self.rows[t]], dtype=np.float32)  # (O, 4), -1 where unseen
        ids = self._ids[t]
        keep = (ids >= 0) & (boxes[:, 0] >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep].copy(), ids[keep].copy()


def open_videos(root: str | os.PathLike[str]) -> list[Video]:
    """Every video under ``root``: each sub-folder holding image files is a frame folder, each file with a video
    extension a video file (sorted by name). A ``root`` that itself holds frames is one video."""
    root = Path(root).expanduser()
    fix = "give data.root a folder of videos: one sub-folder of frames per video, or video files"
    if not root.is_dir():
        raise DataError(f"video folder '{root}' does not exist or is not a directory; {fix}")
    entries = sorted(
        (p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: _natural_key(p.name)
    )
    videos: list[Video] = []
    for p in entries:
        if p.is_dir() and any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.iterdir()):
            videos.append(FrameFolderVideo(p))
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(VideoFileVideo(p))
    if not videos and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries if p.is_file()):
        videos.append(FrameFolderVideo(root))
    if not videos:
        raise DataError(
            f"video folder '{root}' has no frame folders and no video files ({', '.join(VIDEO_EXTENSIONS)}); {fix}"
        )
    return videos


def world_clip_videos(dataset: Any) -> list[WorldClipVideo]:
    """The clips of a :class:`~invarlab.data.world.WorldDataset` over a rendered dataset of kind ``clips``, each
    restricted to the frames the dataset holds (a held-out split leaves gaps; frame numbers stay the world's:
    a clip keeps only its longest run of consecutive frames, so a frame gap is a time gap)."""
    meta = dataset.rendered.meta
    if "clip" not in meta or "frame" not in meta:
        raise DataError(
            "the world dataset has no clips (no 'clip' / 'frame' columns): train on a dataset of kind clips, "
            "e.g. data.world_dataset=clips with a world preset that defines one"
        )
    rows = np.asarray(dataset.indices, dtype=np.int64)
    clip = np.asarray(meta["clip"])[rows]
    frame = np.asarray(meta["frame"])[rows]
    videos = []
    for c in np.unique(clip):
        sel = rows[clip == c][np.argsort(frame[clip == c], kind="stable")]
        fr = np.sort(frame[clip == c])
        # split into runs of consecutive frame numbers and keep the longest
        breaks = np.flatnonzero(np.diff(fr) != 1) + 1
        runs = np.split(np.arange(len(fr)), breaks)
        best = max(runs, key=len)
        videos.append(WorldClipVideo(dataset.rendered, sel[best], name=f"clip{int(c)}"))
    return videos


class _WorldFrameLabels:
    """Per-frame labels of world clips: the world dataset's label of each frame's row (picklable)."""

    def __init__(self, labels: np.ndarray, videos: Sequence[WorldClipVideo]) -> None:
        self.per_video = [labels[v.rows] for v in videos]

    def __call__(self, video: int, t: int) -> int:
        return int(self.per_video[video][t])


def world_clip_frames(dataset: Any) -> VideoFrames:
    """:class:`VideoFrames` over the clips of a world dataset (:func:`world_clip_videos`), at the rendered
    resolution, each frame labelled as the world dataset labels it."""
    videos = world_clip_videos(dataset)
    size = int(dataset.rendered.images.shape[-1])
    return VideoFrames(videos, size, labels=_WorldFrameLabels(np.asarray(dataset._labels), videos))


class VideoFrames(Dataset):
    """Every frame of ``videos`` as an independent image: ``(uint8 (3, S, S), label, index)``.

    ``labels`` gives one label per video (default ``-1``: none) or, as a callable ``(video, t) -> int``, one per
    frame (the world's clips keep their category). ``video_of`` / ``frame_of`` map a position to its video and
    frame; :meth:`read_native` returns the undecimated frame, which region crops are cut from.
    """

    def __init__(
        self,
        videos: Sequence[Video],
        image_size: int,
        resize: int | None = None,
        labels: Sequence[int] | Any = None,
    ) -> None:
        if not videos:
            raise DataError("no videos to take frames from")
        self.videos = list(videos)
        self.image_size = int(image_size)
        self.resize = resize
        lengths = np.array([v.num_frames for v in self.videos], dtype=np.int64)
        self.video_of = np.repeat(np.arange(len(self.videos)), lengths)
        self.frame_of = np.concatenate([np.arange(n) for n in lengths])
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._labels = labels

    def label(self, video: int, t: int) -> int:
        if self._labels is None:
            return -1
        if callable(self._labels):
            return int(self._labels(video, t))
        return int(self._labels[video])

    def position(self, video: int, t: int) -> int:
        """The dataset position of frame ``t`` of video ``video``."""
        return int(self.starts[video] + t)

    def read_native(self, video: int, t: int) -> np.ndarray:
        return self.videos[video].read(t)

    def to_tensor(self, frame: np.ndarray) -> Tensor:
        """A native frame as this dataset's ``uint8 (3, S, S)``."""
        return resize_center_crop(frame, self.image_size, self.resize)

    def __len__(self) -> int:
        return len(self.video_of)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        v, t = int(self.video_of[i]), int(self.frame_of[i])
        return self.to_tensor(self.read_native(v, t)), self.label(v, t), int(i)

    def __repr__(self) -> str:
        return f"VideoFrames(videos={len(self.videos)}, frames={len(self)}, size={self.image_size})"
