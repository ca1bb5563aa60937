"""P1's video models through the real trainer: Frame Temporal Invariance and the Region Tracker (ground-truth and
unsupervised tracks) on world-style clips and on a folder of videos, and the MoCo v2 baseline on the same frames."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from invarlab.data.pairs import FramePairs
from invarlab.data.video import VideoFrames
from invarlab.errors import ConfigError, DataError
from invarlab.methods import FrameTemporal, MethodConfig, MoCo, RegionTracker, build_method
from invarlab.train import Trainer
from invarlab.train.api import train
from invarlab.train.config import TrainConfig
from test_video import moving_squares, world_clips

TINY = {"backbone": "resnet18", "stem": "cifar", "width": 0.125, "view_size": 16, "queue_size": 64}
TINY_VIEWS = {"blur_p": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(run_dir, **kw) -> TrainConfig:
    cfg = TrainConfig(batch_size=8, steps=3, amp="none", run_dir=str(run_dir), device="cpu", seed=2, **kw)
    cfg.log.tensorboard, cfg.log.progress = False, False
    cfg.optim.base_lr, cfg.knn.k = 1.0, 5
    return cfg


def _fit(method, train_set, run_dir, monitor=None):
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    trainer = Trainer(_config(run_dir), method, train_set, monitor)
    result = trainer.fit()
    moved = [k for k, v in method.named_parameters() if not torch.equal(v, before[k])]
    assert result.step == 3 and math.isfinite(result.metrics["loss"])
    assert any(k.startswith("backbone.") for k in moved) and any(k.startswith("head.") for k in moved)
    return trainer, result


def test_frame_temporal_trains_on_world_clips(tmp_path) -> None:
    world = world_clips(tmp_path / "cache", n_clips=4, frames=6)
    torch.manual_seed(0)
    cfg = MethodConfig(
        name="frame_temporal", temporal_gap_min=1, temporal_gap_max=3, view_overrides=TINY_VIEWS, **TINY
    )
    method = build_method(cfg)
    assert isinstance(method, FrameTemporal)
    trainer, result = _fit(method, world, tmp_path / "run", monitor=world)
    pairs = trainer.train_set
    assert isinstance(pairs, FramePairs) and len(pairs) == 4 * 5 and pairs.region_fraction == 0
    assert int(method.queue.total) == 3 * 8  # keys of every step enqueued
    assert result.knn_top1 is not None  # the monitor embeds the frames, not the pairs
    batch = torch.stack([pairs[i][0] for i in range(4)])
    assert batch.shape == (4, 2, 3, 32, 32)
    with pytest.raises(DataError, match=r"\(B, 2, 3, H, W\)"):
        method.training_step(batch[:, 0], None, torch.Generator())
    with pytest.raises(ConfigError, match="trains on video"):
        method.prepare_train_set(torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8)), 0)
    with pytest.raises(ConfigError, match="temporal_gap_min"):
        build_method(MethodConfig(name="frame_temporal", temporal_gap_min=4, temporal_gap_max=2, **TINY))


def test_region_tracker_gt_trains_on_world_clips(tmp_path) -> None:
    world = world_clips(tmp_path / "cache", n_clips=4, frames=6)
    torch.manual_seed(0)
    cfg = MethodConfig(
        name="region_tracker",
        temporal_region_fraction=0.75,
        temporal_min_box=4,
        view_overrides=TINY_VIEWS,
        **TINY,
    )
    method = build_method(cfg)
    assert isinstance(method, RegionTracker)
    trainer, _ = _fit(method, world, tmp_path / "run")
    pairs = trainer.train_set
    kinds = [pairs.sample_pair(i).kind for i in range(len(pairs))]
    assert 0 < kinds.count("frame") < kinds.count("region")


def _video_folder(root) -> None:
    frames, _, _ = moving_squares(steps=8)
    for v in range(2):
        d = root / f"video{v}"
        d.mkdir(parents=True)
        for t, f in enumerate(frames):
            Image.fromarray(np.roll(f, 9 * v, axis=0)).save(d / f"{t:04d}.png")


def test_region_tracker_unsup_trains_on_a_video_folder_through_train(tmp_path) -> None:
    _video_folder(tmp_path / "videos")
    cfg = _config(tmp_path / "run")
    cfg.data.source, cfg.data.root, cfg.data.image_size = "video", str(tmp_path / "videos"), 32
    cfg.method = MethodConfig(
        name="region_tracker",
        temporal_tracks="unsup",
        temporal_region_fraction=1.0,
        view_overrides=TINY_VIEWS,
        **TINY,
    )
    result = train(cfg)
    assert result.step == 3 and math.isfinite(result.metrics["loss"]) and result.knn_top1 is None
    with pytest.raises(ConfigError, match=r"data\.root"):
        bad = _config(tmp_path / "bad")
        bad.data.source = "video"
        train(bad)


def test_moco_baseline_on_the_same_frames(tmp_path) -> None:
    _video_folder(tmp_path / "videos")
    from invarlab.data.video import open_videos

    frames = VideoFrames(open_videos(tmp_path / "videos"), image_size=32)
    torch.manual_seed(0)
    method = build_method(MethodConfig(name="moco", view_overrides=TINY_VIEWS, **TINY))
    assert isinstance(method, MoCo) and not isinstance(method, FrameTemporal)
    trainer, _ = _fit(method, frames, tmp_path / "run")
    assert trainer.train_set is frames  # independent images: no pairs


P1_PRESETS = [
    "supervised",
    "moco_v2",
    "pirl",
    "moco_v2_frames",
    "frame_temporal",
    "region_tracker_gt",
    "region_tracker_unsup",
]


@pytest.mark.parametrize("name", P1_PRESETS)
def test_p1_presets_load_and_build(name) -> None:
    """Every configs/p1 preset validates and builds its method; the video presets share data and budget with
    their baseline, the image presets with each other (only the method section differs)."""
    from invarlab.cli_eval import load_run_config

    cfg = load_run_config([f"configs/p1/{name}.yaml"], None)
    video = name in ("moco_v2_frames", "frame_temporal", "region_tracker_gt", "region_tracker_unsup")
    base = load_run_config(["configs/p1/moco_v2_frames.yaml" if video else "configs/p1/moco_v2.yaml"], None)
    assert cfg.train.data == base.train.data and cfg.train.optim.weight_decay == base.train.optim.weight_decay
    assert (base.train.steps, base.train.batch_size) == (600, 64) and cfg.train.batch_size == 64
    # PIRL's memory bank needs three times the steps at this scale (docs/pirl.md, "At CPU scale")
    assert cfg.train.steps == (3 if name == "pirl" else 1) * base.train.steps
    assert cfg.train.data.world_dataset == ("clips" if video else "train")
    torch.manual_seed(0)
    build_method(cfg.train.method, num_classes=10)
