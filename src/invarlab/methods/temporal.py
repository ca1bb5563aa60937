"""P1's video models (PAPERS.md §1.6): MoCo v2 whose positive pair is separated in time.

- **Frame Temporal Invariance** (``frame_temporal``): query and key are two frames of one video, ``Δ`` frames
  apart with ``Δ`` drawn from ``[temporal_gap_min, temporal_gap_max]``, each with its own MoCo v2 views.
- **Region Tracker** (``region_tracker``): with probability ``temporal_region_fraction`` the pair is instead
  the two square crops of one region tracked from frame ``t`` to ``t + Δ`` (ground-truth tracks, or
  unsupervised proposals followed by optical flow: ``temporal_tracks``); the rest are frame pairs.

Everything else is MoCo v2 (:class:`~invarlab.methods.moco.MoCo`): momentum key encoder, queue of negatives
(frames or regions of other videos), InfoNCE with τ = 0.2 by default. The baseline P1 compares against is plain
``moco`` on the same frames treated as independent images (same data source, same steps and batch).

Data: the trainer hands the method its training set once (:meth:`FrameTemporal.prepare_train_set`); a video
source (:class:`~invarlab.data.video.VideoFrames`, ``data.source=video``) or a world dataset of kind ``clips``
becomes a :class:`~invarlab.data.pairs.FramePairs`, whose batches are ``uint8 (B, 2, 3, H, W)``: frame (or
region) ``t`` then ``t + Δ``.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch.utils.data import Dataset

from invarlab.data.pairs import FramePairs, RegionConfig
from invarlab.data.tracks import TrackerConfig
from invarlab.data.video import VideoFrames, world_clip_frames
from invarlab.errors import ConfigError, DataError
from invarlab.methods.base import MethodConfig, StepOutput
from invarlab.methods.moco import MoCo

__all__ = ["FrameTemporal", "RegionTracker", "as_video_frames"]


log = logging.getLogger("invarlab.train")
REGION_YIELD_PROBES = 64  # samples whose region draws prepare_train_set checks and logs


def as_video_frames(dataset: Dataset, method: str = "frame_temporal") -> VideoFrames:
    """The frames of a video training set: a :class:`VideoFrames` as is, a world dataset of kind ``clips`` as
    its clips; anything else is a :class:`ConfigError` naming the fix."""
    if isinstance(dataset, VideoFrames):
        return dataset
    meta = getattr(getattr(dataset, "rendered", None), "meta", None)
    if meta is not None and "clip" in meta:
        return world_clip_frames(dataset)
    raise ConfigError(
        f"method {method} trains on video, but the training set is {type(dataset).__name__}: use "
        "data.source=video with data.root=FOLDER (frame folders or video files), or a world dataset of kind "
        "clips (e.g. data.world_preset=p1 data.world_dataset=clips)"
    )


class FrameTemporal(MoCo):
    """MoCo v2 on temporal frame pairs; batches are ``(B, 2, 3, H, W)`` (query frame, key frame)."""

    name = "frame_temporal"
    default_views = "mocov2"

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        if cfg.temporal_gap_min > cfg.temporal_gap_max:
            raise ConfigError(
                f"method.temporal_gap_min={cfg.temporal_gap_min} is larger than "
                f"method.temporal_gap_max={cfg.temporal_gap_max}"
            )
        super().__init__(cfg, num_classes)

    def region_fraction(self) -> float:
        return 0.0

    def region_config(self) -> RegionConfig | None:
        return None

    def prepare_train_set(self, dataset: Dataset, seed: int) -> Dataset:
        """The pairs this method trains on, drawn from ``dataset``'s videos with ``seed``. With region pairs,
        logs how many region draws of the first ``REGION_YIELD_PROBES`` samples found a track (the rest train on
        frame pairs)."""
        frames = as_video_frames(dataset, self.name)
        cfg = self.cfg
        pairs = FramePairs(
            frames,
            cfg.temporal_gap_min,
            cfg.temporal_gap_max,
            seed,
            self.region_fraction(),
            self.region_config(),
        )
        if pairs.region_fraction > 0:
            found, asked = pairs.region_yield(REGION_YIELD_PROBES)
            log.info(
                "%s: %d of %d region draws in the first %d samples found a %s track; the other %d use the "
                "frame pair",
                self.name,
                found,
                asked,
                min(REGION_YIELD_PROBES, len(pairs)),
                {"gt": "ground-truth", "unsup": "tracked unsupervised"}.get(pairs.regions.tracks, "usable"),
                asked - found,
            )
        return pairs

    def make_views(self, images: Tensor, generator: torch.Generator | None, n_views: int) -> list[Tensor]:
        """For a pair batch ``(B, 2, 3, H, W)``: one MoCo v2 view of each frame (query from frame ``t``, key
        from frame ``t + Δ``), each with its own parameters; plain images as MoCo does."""
        if images.ndim == 5:
            if n_views != images.shape[1]:
                raise ValueError(f"{n_views} views asked of pairs of {images.shape[1]} frames")
            views = []
            for i in range(n_views):
                views += super().make_views(images[:, i].contiguous(), generator, 1)
            return views
        return super().make_views(images, generator, n_views)

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        if images.ndim != 5 or images.shape[1] != 2:
            raise DataError(
                f"method {self.name} needs frame pairs uint8 (B, 2, 3, H, W), got {tuple(images.shape)}: train "
                "through the Trainer (it builds the pairs with prepare_train_set) or feed FramePairs batches"
            )
        return super().training_step(images, labels, generator)


class RegionTracker(FrameTemporal):
    """Frame Temporal Invariance plus tracked-region pairs (``temporal_region_fraction`` of the samples)."""

    name = "region_tracker"

    def region_fraction(self) -> float:
        return self.cfg.temporal_region_fraction

    def region_config(self) -> RegionConfig:
        cfg = self.cfg
        tracker = TrackerConfig(
            min_inside=cfg.temporal_track_min_inside,
            min_side=float(cfg.temporal_min_box),
            fb_error=cfg.temporal_track_fb_error,
            min_consistent=cfg.temporal_track_min_consistent,
        )
        return RegionConfig(
            cfg.temporal_tracks,
            cfg.temporal_proposals,
            cfg.temporal_region_margin,
            float(cfg.temporal_min_box),
            tracker,
        )
