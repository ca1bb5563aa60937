"""GOT-10k occlusion sets, as P1 builds them (PAPERS.md §1.4, official ``extract_GOT10k_features.py``).

Layout (the GOT-10k training split as downloaded): ``<root>/train/`` (or ``<root>`` itself) holds ``list.txt``
(one video folder name per line) and one folder per video::

    GOT-10k_Train_000001/
        00000001.jpg 00000002.jpg ...   frames, numbered from 1
        groundtruth.txt                 one box per frame: x,y,w,h (pixels)
        cover.label                     one integer per frame: the visible-ratio level (0-8)
        absence.label                   one 0/1 per frame: 1 where the object is absent
        meta_info.ini                   "object_class: <name>" among other keys

Sets (one per video):

1. Videos in ``list.txt`` order; with ``max_videos`` > 0 and more videos than that, every
   ``len // max_videos``-th video (P1's subsampling); every ``stride``-th frame.
2. A video is kept only when its cover levels span at least ``min_cover_range``:
   ``max(cover) − min(cover) ≥ 4`` by default.
3. From a kept video, **one random frame per distinct cover level**, drawn with
   ``numpy.random.RandomState(seed).choice`` over the video's frames at that level, levels ascending, videos
   in order, one generator for the whole dataset (``seed=1992``, as the official ``np.random.seed(1992)``: the
   same frames as P1's code are chosen).
4. Each image is the frame cropped to its ``groundtruth.txt`` box, resized to ``size x size`` (P1: 128).
   The set is the video; the class is ``object_class`` from ``meta_info.ini`` (spaces as underscores).

Frames whose box is unusable (not finite, or width / height ≤ 0) are never candidates (the official code would
fail on them). ``drop_absent=True`` also removes frames marked in ``absence.label``; the default keeps them, as
P1 did.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from invarlab.data.sets import InvarianceSets
from invarlab.errors import DataError

__all__ = ["Got10kVideo", "got10k_sets", "read_video", "select_cover_frames"]

log = logging.getLogger(__name__)

_FIX = "re-extract this video from the GOT-10k archive, or remove its line from list.txt"


class Got10kVideo:
    """The annotations of one video: ``boxes`` ``(T, 4)``, ``cover`` and ``absence`` ``(T,)``, its class."""

    def __init__(
        self, folder: Path, object_class: str, boxes: np.ndarray, cover: np.ndarray, absence: np.ndarray
    ):
        self.folder, self.object_class = folder, object_class
        self.boxes, self.cover, self.absence = boxes, cover, absence

    def frame_path(self, frame: int) -> Path:
        """File of frame ``frame`` (0-based position; files are numbered from 1)."""
        return self.folder / f"{frame + 1:08d}.jpg"


def _read_ints(path: Path, required: bool) -> np.ndarray | None:
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing (GOT-10k train videos have one); {_FIX}")
        return None
    try:
        return np.array([int(float(s)) for s in path.read_text().split()], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{path}: not one integer per line ({err}); {_FIX}") from None


def read_video(folder: str | os.PathLike[str], need_absence: bool = False) -> Got10kVideo:
    """A video's ``meta_info.ini``, ``groundtruth.txt``, ``cover.label`` and ``absence.label`` (missing
    absence = never absent, unless ``need_absence``). Missing or malformed files raise :class:`DataError`."""
    folder = Path(folder)
    meta = folder / "meta_info.ini"
    if not meta.is_file():
        raise DataError(f"{meta}: missing (it names the object class); {_FIX}")
    object_class = None
    for line in meta.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "object_class":
            object_class = value.strip().replace(" ", "_")
            break
    if not object_class:
        raise DataError(f"{meta}: no 'object_class: <name>' line; {_FIX}")
    gt = folder / "groundtruth.txt"
    if not gt.is_file():
        raise DataError(f"{gt}: missing (one x,y,w,h box per frame); {_FIX}")
    try:
        rows = [[float(v) for v in line.split(",")] for line in gt.read_text().splitlines() if line.strip()]
        boxes = np.array(rows, dtype=np.float64).reshape(len(rows), 4)
    except ValueError as err:
        raise DataError(f"{gt}: not one 'x,y,w,h' box per line ({err}); {_FIX}") from None
    cover = _read_ints(folder / "cover.label", required=True)
    absence = _read_ints(folder / "absence.label", required=need_absence)
    if absence is None:
        absence = np.zeros(len(boxes), dtype=np.int64)
    for name, values in (("cover.label", cover), ("absence.label", absence)):
        if len(values) != len(boxes):  # type: ignore[arg-type]
            raise DataError(
                f"{folder / name}: {len(values)} lines for {len(boxes)} boxes in groundtruth.txt; {_FIX}"  # type: ignore[arg-type]
            )
    return Got10kVideo(folder, object_class, boxes, cover, absence)  # type: ignore[arg-type]


def select_cover_frames(
    covers: Sequence[np.ndarray],
    seed: int = 1992,
    min_cover_range: int = 4,
    candidates: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """P1's frame choice: for each video (in order), the positions of one random frame per distinct cover
    level, levels ascending, or an empty array when the levels span less than ``min_cover_range``.

    ``covers[v]`` holds video ``v``'s cover level per frame; ``candidates[v]`` (bool, optional) marks the
    frames that may be chosen. One ``numpy.random.RandomState(seed)`` draws ``choice(frames at level)`` in
    that order, so the result equals the official ``np.random.seed(seed)`` loop's."""
    rng = np.random.RandomState(seed)
    out = []
    for v, cover in enumerate(covers):
        cover = np.asarray(cover)
        frames = np.arange(len(cover))
        if candidates is not None:
            keep = np.asarray(candidates[v], dtype=bool)
            cover, frames = cover[keep], frames[keep]
        levels = np.unique(cover)
        if len(levels) == 0 or levels.max() - levels.min() < min_cover_range:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        out.append(np.array([frames[rng.choice(np.where(cover == c)[0])] for c in levels], dtype=np.int64))
    return out


def find_got10k_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding ``list.txt`` and the video folders: ``root`` or ``root/train``."""
    root = Path(root).expanduser()
    for folder in (root, root / "train"):
        if (folder / "list.txt").is_file():
            return folder
    raise DataError(
        f"GOT-10k: no list.txt in '{root}' or '{root / 'train'}'; give --root the GOT-10k folder whose train/ "
        "holds list.txt and the GOT-10k_Train_* video folders (the training split from got-10k.aitestunion.com)"
    )


def got10k_sets(
    root: str | os.PathLike[str],
    size: int = 128,
    seed: int = 1992,
    min_cover_range: int = 4,
    stride: int = 1,
    max_videos: int = 0,
    drop_absent: bool = False,
) -> InvarianceSets:
    """P1's occlusion sets from the GOT-10k training split (module docstring). Extra metadata: ``cover``
    (level), ``frame`` (1-based frame number, the file name), ``video`` (position in ``list.txt``)."""
    if stride < 1:
        raise DataError(f"GOT-10k stride must be at least 1, got {stride}")
    folder = find_got10k_dir(root)
    videos = [v.strip() for v in (folder / "list.txt").read_text().splitlines() if v.strip()]
    if not videos:
        raise DataError(f"{folder / 'list.txt'}: empty; it should name one video folder per line")
    order = np.arange(len(videos))
    if max_videos > 0 and len(videos) > max_videos:
        order = order[:: len(videos) // max_videos]
    annotations, covers, candidates, frame_ids = [], [], [], []
    for v in order:
        path = folder / videos[v]
        if not path.is_dir():
            raise DataError(f"{path}: listed in {folder / 'list.txt'} but not a folder; {_FIX}")
        ann = read_video(path, need_absence=drop_absent)
        frames = np.arange(len(ann.boxes))[::stride]
        boxes = ann.boxes[frames]
        usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        if drop_absent:
            usable &= ann.absence[frames] == 0
        annotations.append(ann)
        covers.append(ann.cover[frames])
        candidates.append(usable)
        frame_ids.append(frames)
    chosen = select_cover_frames(covers, seed, min_cover_range, candidates)
    paths, boxes, set_ids, names, cover, frame, video = [], [], [], [], [], [], []
    n_sets = 0
    for ann, v, frames, pick, cov in zip(annotations, order, frame_ids, chosen, covers, strict=True):
        if len(pick) == 0:
            continue
        for p in pick:
            f = int(frames[p])
            paths.append(ann.frame_path(f))
            boxes.append(ann.boxes[f])
            cover.append(int(cov[p]))
            frame.append(f + 1)
        set_ids += [n_sets] * len(pick)
        names += [ann.object_class] * len(pick)
        video += [int(v)] * len(pick)
        n_sets += 1
    if not paths:
        raise DataError(
            f"GOT-10k: none of the {len(order)} videos under '{folder}' has cover levels spanning "
            f"{min_cover_range} or more; lower min_cover_range or check the cover.label files"
        )
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: frame file missing ({len(missing)} chosen frames are); {_FIX}")
    class_names, class_ids = np.unique(np.asarray(names), return_inverse=True)
    log.info("GOT-10k: %d of %d videos kept, %d frames", n_sets, len(order), len(paths))
    return InvarianceSets(
        "got10k",
        "occlusion",
        paths,
        set_ids=set_ids,
        class_ids=class_ids,
        class_names=[str(c) for c in class_names],
        size=size,
        boxes=np.asarray(boxes, dtype=np.float64),
        extra={"cover": np.asarray(cover), "frame": np.asarray(frame), "video": np.asarray(video)},
    )
