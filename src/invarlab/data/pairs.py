"""Temporal positive pairs for P1's video models: two frames of one video ``Δ`` apart, or the two crops of one
tracked region (PAPERS.md §1.6, "mining positives").

:class:`FramePairs` wraps a :class:`~invarlab.data.video.VideoFrames` and returns ``(uint8 (2, 3, S, S), label,
index)``: the query frame ``t`` and the key frame ``t + Δ``, where ``Δ`` is drawn uniformly from
``{gap_min, .., min(gap_max, T − 1 − t)}``. Every frame ``t`` with ``t + gap_min < T`` is one sample (an
epoch sees each such frame once as a query). With ``region_fraction > 0`` (Region Tracker) a sample is, with
that probability, the pair of square crops of one region tracked from ``t`` to ``t + Δ``:

- ``tracks="gt"``: a track id present in both frames (the world's track ids, a GOT-10k ``groundtruth.txt``),
  drawn uniformly among those whose boxes have a shorter side of at least ``min_box`` in both;
- ``tracks="unsup"``: proposals in frame ``t`` followed by optical flow (:mod:`invarlab.data.tracks`), one
  surviving track drawn uniformly.

When no region qualifies the sample falls back to the frame pair. A crop is the square of side ``margin x`` the
box's longer side around its centre (zero outside the frame), resized to ``S``. Every draw comes from a NumPy
generator seeded by ``(seed, epoch, index)``: :meth:`set_epoch` (called by the trainer) gives a new draw per
epoch, and a resumed run replays the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.tracks import TrackerConfig, propose, track_boxes
from invarlab.data.video import VideoFrames
from invarlab.errors import ConfigError, DataError

__all__ = ["FramePairs", "PairSpec", "RegionConfig", "crop_region"]


@dataclass(frozen=True)
class RegionConfig:
    """How region pairs are found: ``tracks`` ``gt`` or ``unsup``, the proposal ``method`` for ``unsup``,
    the crop ``margin``, the smallest box side ``min_box`` (native pixels) and the tracker's settings."""

    tracks: str = "gt"
    proposals: str = "edges"
    margin: float = 1.2
    min_box: float = 6.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass(frozen=True)
class PairSpec:
    """One drawn sample: video, query frame ``t``, key frame ``t2``, ``kind`` (``frame`` or ``region``), and for
    a region its track id (``-1`` for unsupervised tracks) and boxes (x0, y0, x1, y1, native pixels)."""

    video: int
    t: int
    t2: int
    kind: str = "frame"
    track: int = -1
    box: tuple[float, ...] | None = None
    box2: tuple[float, ...] | None = None


def crop_region(frame: np.ndarray, box: np.ndarray | tuple, size: int, margin: float = 1.2) -> Tensor:
    """The square of side ``margin * max(w, h)`` centred on ``box`` (x0, y0, x1, y1), zero where it leaves the
    frame, resized to ``size`` (area averaging when shrinking, bilinear when enlarging): ``uint8 (3, S, S)``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1.0, margin * max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top, n = round(cx - side / 2), round(cy - side / 2), round(side)
    h, w = frame.shape[:2]
    out = np.zeros((n, n, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + n, w), min(top + n, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = frame[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if n > size else cv2.INTER_LINEAR
    out = cv2.resize(out, (size, size), interpolation=interp) if n != size else out
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()


class FramePairs(Dataset):
    """``(uint8 (2, 3, S, S), label, index)`` temporal pairs from ``frames`` (see the module docstring). ``label``
    and ``index`` are the query frame's in ``frames``."""

    def __init__(
        self,
        frames: VideoFrames,
        gap_min: int,
        gap_max: int,
        seed: int,
        region_fraction: float = 0.0,
        regions: RegionConfig | None = None,
    ) -> None:
        if not 1 <= gap_min <= gap_max:
            raise ConfigError(
                f"need 1 <= temporal_gap_min <= temporal_gap_max, got {gap_min} and {gap_max}: the key frame "
                "must come after the query frame"
            )
        if not 0.0 <= region_fraction <= 1.0:
            raise ConfigError(f"temporal_region_fraction must be in [0, 1], got {region_fraction}")
        self.frames, self.gap_min, self.gap_max, self.seed = frames, int(gap_min), int(gap_max), int(seed)
        self.region_fraction = float(region_fraction)
        self.regions = regions or RegionConfig()
        if self.region_fraction > 0 and self.regions.tracks == "gt":
            missing = [v.name for v in frames.videos if not v.has_tracks]
            if len(missing) == len(frames.videos):
                raise DataError(
                    "region pairs from ground-truth tracks need videos with tracks (world clips, or frame folders "
                    f"with a GOT-10k groundtruth.txt), and none of the {len(missing)} videos has any; use "
                    "method.temporal_tracks=unsup"
                )
        lengths = np.array([v.num_frames for v in frames.videos])
        anchors = [frames.starts[v] + np.arange(max(0, n - self.gap_min)) for v, n in enumerate(lengths)]
        self.anchors = np.concatenate(anchors).astype(np.int64)
        if not len(self.anchors):
            raise DataError(
                f"no video is longer than temporal_gap_min={self.gap_min} frames (longest: {lengths.max()}); "
                "lower the gap or use longer clips"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.anchors)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def _draw(self, i: int) -> tuple[int, int, int, bool, np.random.Generator]:
        """Sample ``i``'s video, query frame, key frame, whether it asks for a region pair, and its generator."""
        pos = int(self.anchors[i])
        v, t = int(self.frames.video_of[pos]), int(self.frames.frame_of[pos])
        rng = self._rng(i)
        hi = min(self.gap_max, self.frames.videos[v].num_frames - 1 - t)
        t2 = t + int(rng.integers(self.gap_min, hi + 1))
        return v, t, t2, bool(rng.random() < self.region_fraction), rng

    def sample_pair(self, i: int, frames: dict[int, np.ndarray] | None = None) -> PairSpec:
        """The pair sample ``i`` of the current epoch draws (``frames`` caches decoded native frames by number)."""
        v, t, t2, use_region, rng = self._draw(i)
        if not use_region:
            return PairSpec(v, t, t2)
        video = self.frames.videos[v]
        found = self._gt_region(video, t, t2, rng) if self.regions.tracks == "gt" else None
        if self.regions.tracks == "unsup":
            found = self._unsup_region(video, t, t2, rng, frames)
        if found is None:
            return PairSpec(v, t, t2)
        track, box, box2 = found
        return PairSpec(v, t, t2, "region", track, tuple(map(float, box)), tuple(map(float, box2)))

    def region_yield(self, probes: int = 64) -> tuple[int, int]:
        """``(found, asked)`` over the first ``probes`` samples of the current epoch: how many of the draws that
        asked for a region pair got one. The others fall back to the frame pair (no common track, no proposal,
        or every track lost), so ``found / asked`` is the region share the training really sees."""
        asking = [i for i in range(min(probes, len(self))) if self._draw(i)[3]]
        return sum(self.sample_pair(i).kind == "region" for i in asking), len(asking)

    def _gt_region(self, video, t: int, t2: int, rng: np.random.Generator):
        boxes, ids = video.tracks(t)
        boxes2, ids2 = video.tracks(t2)
        common = []
        for j, tid in enumerate(ids):
            k = np.flatnonzero(ids2 == tid)
            if len(k) and min(_side(boxes[j]), _side(boxes2[k[0]])) >= self.regions.min_box:
                common.append((int(tid), boxes[j], boxes2[k[0]]))
        return common[int(rng.integers(len(common)))] if common else None

    def _unsup_region(self, video, t: int, t2: int, rng: np.random.Generator, cache):
        cfg = self.regions.tracker
        run = video.read_range(t, t2)
        if cache is not None:
            cache.update({t: run[0], t2: run[-1]})
        props = propose(run[0], self.regions.proposals, cfg)
        if len(props) == 0:
            return None
        traj, alive = track_boxes(run, props, cfg)
        ok = np.flatnonzero(alive[-1])
        if len(ok) == 0:
            return None
        j = int(ok[rng.integers(len(ok))])
        return -1, traj[0, j], traj[-1, j]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        cache: dict[int, np.ndarray] = {}
        spec = self.sample_pair(i, cache)
        read = lambda t: cache[t] if t in cache else self.frames.read_native(spec.video, t)  # noqa: E731
        a, b = read(spec.t), read(spec.t2)
        if spec.kind == "region":
            size, m = self.frames.image_size, self.regions.margin
            pair = torch.stack([crop_region(a, spec.box, size, m), crop_region(b, spec.box2, size, m)])
        else:
            pair = torch.stack([self.frames.to_tensor(a), self.frames.to_tensor(b)])
        pos = int(self.anchors[i])
        return pair, self.frames.label(spec.video, spec.t), pos

    def __repr__(self) -> str:
        return (
            f"FramePairs({len(self)} anchors, gap {self.gap_min}..{self.gap_max}, "
            f"regions {self.region_fraction:g} {self.regions.tracks})"
        )


def _side(box: np.ndarray) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))
