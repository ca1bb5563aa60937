"""The ``train(config)`` entry: build the data sources and the method from a :class:`TrainConfig`, then fit.

This is what ``invarlab train`` calls (one process, or each of the processes ``torchrun`` starts). Code that
builds its own method or datasets uses :class:`~invarlab.train.loop.Trainer` directly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from invarlab.data.collate import split_indices
from invarlab.data.folder import FolderDataset
from invarlab.data.world import WorldDataset
from invarlab.errors import ConfigError
from invarlab.train.config import DataConfig, TrainConfig, check_train_config
from invarlab.train.loop import Trainer, TrainResult
from invarlab.train.util import dist_info, init_distributed, mix_seed, resolve_device

__all__ = ["build_datasets", "build_world_datasets", "train"]

log = logging.getLogger("invarlab.train")


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def build_world_datasets(data: DataConfig, seed: int) -> tuple[WorldDataset, WorldDataset | None]:
    """Render (or find in the cache) the preset's training dataset and, if named, its held-out dataset.

    ``data.image_size`` (when > 0) sets the world's render resolution. Rank 0 renders first and the others
    then read the cache, so several processes never render the same entry at once.
    """
    from invarlab.config import load_config
    from invarlab.world.api import render_datasets
    from invarlab.world.config import WorldPreset

    overrides = ([f"world.render.resolution={data.image_size}"] if data.image_size else []) + list(
        data.world_overrides
    )
    preset = load_config(WorldPreset, data.world_preset, overrides, group="world")
    names = [data.world_dataset] + ([data.world_monitor_dataset] if data.world_monitor_dataset else [])
    missing = [n for n in names if n not in preset.datasets]
    if missing:
        raise ConfigError(
            f"world preset '{data.world_preset}' has no dataset '{missing[0]}'; it has: {', '.join(preset.datasets)}"
        )
    preset = dataclasses.replace(preset, datasets={n: preset.datasets[n] for n in names})
    rank, _ = dist_info()
    if rank == 0:
        rendered = render_datasets(preset)
    _barrier()
    if rank != 0:
        rendered = render_datasets(preset)  # cache hits now
    full = _sampled(WorldDataset(rendered[data.world_dataset].dataset, label=data.label), data)
    if data.world_monitor_dataset:
        # data.label, not the training set's resolved column: a cropped-box training set labels by
        # crop_category, an object-centric monitor set by category_0 - the same category ids.
        held = WorldDataset(
            rendered[data.world_monitor_dataset].dataset, label=data.label, classes=full.classes
        )
        return full, held
    if data.held_out_fraction == 0:
        return full, None
    train_idx, held_idx = split_indices(len(full), data.held_out_fraction, mix_seed(seed, "held-out"))
    return full.subset(train_idx), full.subset(held_idx)


def build_datasets(data: DataConfig, seed: int) -> tuple[Dataset, Dataset | None]:
    """``(train_set, monitor_set)`` of a data config; the monitor set is None when nothing is held out."""
    if data.source == "world":
        return build_world_datasets(data, seed)
    if data.source == "video":  # unlabelled frames: no kNN monitor (evaluate with invarlab eval)
        from invarlab.data.video import VideoFrames, open_videos

        return VideoFrames(open_videos(data.root), data.image_size or 64, data.resize or None), None
    from invarlab.data.classification import ARRAY_SOURCES, array_split

    if data.source in ARRAY_SOURCES:  # native 32 / 96 px; the test split is the monitor
        train = _sampled(array_split(data.source, data.root, "train"), data)
        test = array_split(data.source, data.root, "test")
        # A class subset (data.classes) trains on some classes: the monitor scores those only.
        kept = torch.isin(test.labels, torch.unique(train.labels))
        return train, test if bool(kept.all()) else test.subset(torch.nonzero(kept).squeeze(1))
    size = data.image_size or 64
    if data.source.startswith("coco"):
        from invarlab.data.coco import CocoBoxes, CocoImages

        full = (
            CocoImages(data.root, data.annotations, size, data.resize or None)
            if data.source == "coco"
            else CocoBoxes(data.root, data.annotations, size, data.min_box, data.resize or None)
        )
    else:
        full = FolderDataset(data.root, size, data.resize or None, verify=data.verify)
    full = _sampled(full, data)
    if data.monitor_root:
        return full, FolderDataset(
            data.monitor_root, size, data.resize or None, classes=full.classes, verify=data.verify
        )
    if data.held_out_fraction == 0:
        return full, None
    train_idx, held_idx = split_indices(len(full), data.held_out_fraction, mix_seed(seed, "held-out"))
    return full.subset(train_idx), full.subset(held_idx)


def _sampled(full: Any, data: DataConfig) -> Any:
    """``full`` restricted to ``data.classes``, long-tailed by ``data.imbalance``, cut to ``data.max_images``."""
    if not data.classes and data.imbalance == 1 and not data.max_images:
        return full
    from invarlab.data.sampling import sample_indices

    try:
        idx = sample_indices(
            full.labels,
            getattr(full, "class_names", full.classes),
            data.subset_seed,
            data.classes,
            data.imbalance,
            data.max_images,
            getattr(full, "class_groups", None),
        )
    except ValueError as err:
        raise ConfigError(f"data.classes / data.imbalance / data.max_images: {err}") from None
    log.info(
        "training source: %d of %d images after class subset / long tail / max_images", len(idx), len(full)
    )
    return full.subset(idx)


def _build_method(cfg: TrainConfig, num_classes: int | None) -> Any:
    try:
        from invarlab.methods import build_method
    except ImportError as e:
        raise ConfigError(
            f"the methods package is not available ({e}); build the method and use Trainer"
        ) from None
    return build_method(cfg.method, num_classes)


def train(config: TrainConfig, datasets: tuple[Dataset, Dataset | None] | None = None) -> TrainResult:
    """Build data and method from ``config`` and train (resuming as ``config.resume`` says). ``datasets``
    (optional) is ``build_datasets(config.data, config.seed)`` already built by the caller, so a folder is
    not scanned twice.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this joins the process group (gloo on CPU, nccl on CUDA) and
    leaves it at the end; every rank builds the method from the same seed.
    """
    device = resolve_device(config.device)
    check_train_config(config, device.type)
    own_group = init_distributed(device)
    try:
        train_set, monitor_set = datasets or build_datasets(config.data, config.seed)
        torch.manual_seed(mix_seed(config.seed, "init"))  # the same initial weights on every rank
        method = _build_method(config, getattr(train_set, "num_classes", None))
        return Trainer(config, method, train_set, monitor_set, device=device).fit()
    finally:
        if own_group:
            dist.destroy_process_group()
