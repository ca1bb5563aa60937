"""The structured config of a training run (``invarlab train``): data, method, optimiser, schedule, run.

Every field carries ``help`` and its allowed values, which :func:`invarlab.config.load_config` validates and
``invarlab train --help`` prints. The method section is :class:`invarlab.methods.MethodConfig` when that
package is importable; until it is, ``method`` is a plain mapping passed through to ``build_method``.
"""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from invarlab.config import opt
from invarlab.errors import ConfigError

try:  # the methods package is written alongside the trainer; the trainer must not need it to import
    from invarlab.methods import MethodConfig

    HAS_METHODS = True
except ImportError:  # pragma: no cover - only while invarlab.methods does not exist
    MethodConfig = None  # type: ignore[assignment,misc]
    HAS_METHODS = False

__all__ = [
    "HAS_METHODS",
    "CheckpointConfig",
    "DataConfig",
    "KnnConfig",
    "LogConfig",
    "OptimConfig",
    "TrainConfig",
    "check_train_config",
]


@dataclass
class DataConfig:
    """Where training images come from. A world dataset is rendered into the cache on first use."""

    source: str = opt(
        "world",
        "image source: world, folder (ImageNet-style), coco (full scenes), coco_boxes (ground-truth box crops), "
        "video (frame folders / video files, docs/video.md), cifar10 / cifar100 / stl10 (as distributed: "
        "train split, native size; the test split is the kNN monitor)",
        choices=("world", "folder", "coco", "coco_boxes", "video", "cifar10", "cifar100", "stl10"),
    )
    world_preset: str = opt("tiny", "world: preset name (configs/world/NAME.yaml) or YAML file")
    world_dataset: str = opt("object_centric", "world: which dataset of the preset to train on")
    world_overrides: list[str] = opt(
        [], "world: key=value overrides of the preset (e.g. datasets.object_centric.num_images=2048)"
    )
    world_monitor_dataset: str = opt(
        "",
        "world: a dataset of the preset held out for the kNN monitor; empty: split one off (held_out_fraction)",
    )
    label: str = opt(
        "auto", "world: metadata column used as the label; auto = crop_category, else category_0"
    )
    root: str = opt(
        "",
        "folder: root holding one sub-folder of images per class (ImageNet train layout); video: one "
        "sub-folder of frames or one video file per video",
    )
    monitor_root: str = opt(
        "", "folder: held-out folder with the same class names (e.g. ImageNet val); empty: split one off"
    )
    image_size: int = opt(
        0, "image side in pixels; 0 = the world preset's resolution (world) or 64 (folder)", range=(0, 1024)
    )
    resize: int = opt(0, "folder: shorter side before the centre crop; 0 = image_size", range=(0, 4096))
    verify: bool = opt(True, "folder: check every file's header at start-up and skip unreadable ones")
    held_out_fraction: float = opt(
        0.1,
        "fraction of the training images held out for the kNN monitor when no held-out set is given",
        range=(0.0, 0.9),
    )
    num_workers: int = opt(0, "DataLoader worker processes (0 = load in the training process)", range=(0, 64))
    # Dataset-bias studies (docs/datasets.md): applied in this order to folder / coco / coco_boxes sources.
    annotations: str = opt("", "coco, coco_boxes: instances JSON (annotations/instances_train2017.json)")
    min_box: int = opt(64, "coco_boxes: minimum box width and height in pixels", range=(1, None))
    classes: list[str] = opt(
        [],
        "keep only these classes: names (world: catalogue category names), glob patterns or (coco) supercategories; empty = all",
    )
    imbalance: float = opt(
        1.0,
        "long tail: class c keeps n_max * imbalance^(-c/(C-1)) images, n_max = the smallest class; 1 = all",
        range=(1.0, None),
    )
    max_images: int = opt(
        0, "a random subset of this many images (equal counts across a comparison); 0 = all", range=(0, None)
    )
    subset_seed: int = opt(
        0, "seed of the class-subset / long-tail / max_images choices (not the run seed)", range=(0, None)
    )


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule: lr = base_lr * batch_size / 256, linear warm-up, then cosine."""

    name: str = opt(
        "sgd", "optimiser: SGD with momentum, or LARS (layer-wise trust ratio)", choices=("sgd", "lars")
    )
    base_lr: float = opt(
        0.03, "learning rate for a batch of 256; the run uses base_lr * batch_size / 256", range=(0.0, None)
    )
    weight_decay: float = opt(
        1e-4, "L2 weight decay (the method decides which parameters get it)", range=(0.0, None)
    )
    momentum: float = opt(0.9, "momentum", range=(0.0, 1.0))
    nesterov: bool = opt(False, "Nesterov momentum (sgd only)")
    lars_eta: float = opt(0.001, "LARS trust coefficient eta", range=(0.0, None))
    warmup_steps: int = opt(0, "steps of linear warm-up from lr/warmup_steps to lr", range=(0, None))
    schedule: str = opt(
        "cosine",
        "after warm-up: cosine decay to min_lr_ratio * lr, or constant",
        choices=("cosine", "constant"),
    )
    min_lr_ratio: float = opt(0.0, "final lr of the cosine as a fraction of the peak lr", range=(0.0, 1.0))
    grad_clip: float = opt(
        0.0,
        "clip the global L2 norm of the gradients to this value before each step and log the unclipped norm "
        "as grad_norm (0 = off)",
        range=(0.0, None),
    )
    nonfinite: str = opt(
        "stop",
        "a NaN / infinite loss or gradient: stop (before the update, naming the last good checkpoint) or skip "
        "the update and count it (stops after 10 skips in a row)",
        choices=("stop", "skip"),
    )


@dataclass
class CheckpointConfig:
    """Atomic checkpoints in RUN/checkpoints/step_NNNNNNNN.pt (also written at the last step)."""

    every: int = opt(500, "write a checkpoint every N steps (0 = only at the end)", range=(0, None))
    keep: int = opt(3, "keep the newest K checkpoints (0 = keep all)", range=(0, None))


@dataclass
class LogConfig:
    """What the run reports: metrics.jsonl, TensorBoard events, a progress bar (rank 0 only)."""

    every: int = opt(10, "log the mean loss and metrics every N steps", range=(1, None))
    tensorboard: bool = opt(True, "write TensorBoard events into the run directory")
    progress: bool = opt(True, "rich progress bar with loss, lr, img/s and ETA (only on a terminal)")


@dataclass
class KnnConfig:
    """Online weighted kNN monitor on the held-out images (cosine similarity, weights exp(s / T))."""

    every_epochs: int = opt(1, "run the monitor every N epochs and at the end (0 = never)", range=(0, None))
    at_start: bool = opt(
        True,
        "also run it once before the first step of a fresh run (step 0: the network at initialisation, the "
        "floor); not again on resume",
    )
    k: int = opt(200, "neighbours", range=(1, None))
    temperature: float = opt(0.1, "temperature T of the weights exp(similarity / T)", range=(1e-4, None))
    max_bank: int = opt(
        10000,
        "at most this many training images form the memory bank (a fixed seeded subset)",
        range=(1, None),
    )
    max_test: int = opt(5000, "at most this many held-out images are classified", range=(1, None))
    batch_size: int = opt(256, "images per feature-extraction batch", range=(1, None))


def _method_default() -> Any:
    return MethodConfig() if HAS_METHODS else {}


@dataclass
class TrainConfig:
    """A training run: one method on one data source, resumable from its run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    if HAS_METHODS:
        method: MethodConfig = field(default_factory=_method_default)
    else:  # placeholder until invarlab.methods exists: any mapping, handed to build_method as is
        method: dict[str, Any] = field(
            default_factory=dict, metadata={"help": "method config (build_method)"}
        )
    batch_size: int = opt(
        256, "global batch size (all processes together; divisible by the world size)", range=(1, None)
    )
    steps: int = opt(0, "optimiser steps to train; 0 = use epochs", range=(0, None))
    epochs: int = opt(
        0, "epochs to train when steps = 0 (an epoch = len(train set) // batch_size steps)", range=(0, None)
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    amp: str = opt(
        "auto",
        "autocast: auto (bf16 on CUDA GPUs that support it, else fp16; bf16 on CPUs with native bf16, else "
        "none), bf16, fp16 (CUDA only, "
        "with loss scaling), none",
        choices=("auto", "none", "bf16", "fp16"),
    )
    channels_last: bool = opt(False, "channels-last memory format for the model and images (faster convs)")
    compile: bool = opt(False, "torch.compile the backbone (about 40 s cold start on a CPU)")
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: str = opt(
        "auto", "auto = newest checkpoint in run_dir if any; none = fresh run; or a checkpoint path"
    )
    seed: int = opt(0, "seed of the data order, the views and the initialisation", range=(0, 2**31 - 1))
    run_dir: str = opt("", "run directory; empty = runs/<method>-<hash of the config>")
    device: str = opt(
        "auto", "torch device: auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda, cuda:1"
    )
    log: LogConfig = field(default_factory=LogConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)


def check_train_config(cfg: TrainConfig, device_type: str) -> None:
    """Checks that span several keys (the schema checks one key at a time)."""
    if cfg.steps == 0 and cfg.epochs == 0:
        raise ConfigError("set steps or epochs (both are 0): e.g. steps=500 or epochs=10")
    if cfg.steps and cfg.epochs:
        raise ConfigError(f"set steps or epochs, not both (got steps={cfg.steps}, epochs={cfg.epochs})")
    if cfg.amp == "fp16" and device_type != "cuda":
        raise ConfigError("amp=fp16 needs a CUDA device; on a CPU use amp=bf16 (or amp=none)")
    if cfg.data.source == "folder" and not cfg.data.root:
        raise ConfigError("data.source=folder needs data.root=PATH (a folder of class sub-folders)")
    if cfg.data.source in ("cifar10", "cifar100", "stl10") and not cfg.data.root:
        raise ConfigError(
            f"data.source={cfg.data.source} needs data.root=PATH (the extracted archive, or the folder holding it)"
        )
    if cfg.data.source == "video" and not cfg.data.root:
        raise ConfigError("data.source=video needs data.root=PATH (a folder of frame folders or video files)")
    if cfg.data.source.startswith("coco") and not (cfg.data.root and cfg.data.annotations):
        raise ConfigError(
            f"data.source={cfg.data.source} needs data.root=IMAGES (train2017/) and data.annotations=JSON"
        )
