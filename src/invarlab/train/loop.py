"""The trainer: one loop for every method (data order, AMP, DDP, schedule, checkpoints, logs, kNN monitor).

A method is anything that follows the contract of ``invarlab.methods.base.Method``: ``training_step(images
uint8 (B,3,H,W) on the device, labels, generator) -> StepOutput(loss, metrics)``, ``parameter_groups(wd)``,
``on_after_optimizer_step(step, total_steps)``, ``features(normalised float images)`` and a ``backbone``.

Determinism: the data order is a pure function of ``(seed, epoch)`` (a seeded permutation per epoch; step ``s``
reads batch ``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch``), and every random state a step uses
(torch, CUDA, Python, NumPy, the views generator) is stored in each checkpoint. So a run killed after its
checkpoint at step ``k`` and resumed reaches step ``n`` with the same parameters, bit for bit on a CPU, as a run
that never stopped.

Distributed (``torchrun``): the global batch of step ``s`` is the single-process batch, cut into ``world_size``
contiguous per-rank parts; the method is wrapped in ``DistributedDataParallel`` (gradients averaged), every
rank keeps its own generators (stored per rank), rank 0 writes checkpoints and logs and runs the monitor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from invarlab.config import config_hash, to_yaml
from invarlab.data.collate import collate_uint8
from invarlab.errors import CheckpointError, ConfigError, DataError, UserError
from invarlab.nets.checkpoints import make_checkpoint
from invarlab.train import checkpoint as ck
from invarlab.train.config import TrainConfig, check_train_config
from invarlab.train.lock import run_lock
from invarlab.train.log import RunLogger
from invarlab.train.monitor import extract_features, knn_predict
from invarlab.train.optim import build_optimizer
from invarlab.train.sampler import EpochBatchSampler
from invarlab.train.schedule import WarmupCosine, scaled_lr
from invarlab.train.util import dist_info, mix_seed, resolve_amp, resolve_device

__all__ = ["EpochBatchSampler", "NonFiniteLossError", "TrainResult", "Trainer"]

log = logging.getLogger("invarlab.train")
# Keys that do not change what is trained: they are left out of the default run directory's hash.
_RUN_KEYS = ("run_dir", "resume", "device", "log.*", "knn.*", "checkpoint.*", "data.num_workers", "compile")


class NonFiniteLossError(UserError):
    """The loss or a gradient became NaN or infinite; training stopped before the update, the last checkpoint
    is intact."""


# optim.nonfinite=skip stops after this many consecutive skipped steps: the run is diverging, not hiccuping.
_MAX_SKIPS_IN_A_ROW = 10


@dataclasses.dataclass
class TrainResult:
    """Where a run ended: its directory, the completed steps, the last checkpoint and the last logged values."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    metrics: dict[str, float]
    knn_top1: float | None


class _StepModule(nn.Module):
    """Routes ``training_step`` through ``forward``, which is what DistributedDataParallel hooks into."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(
        self, images: Tensor, labels: Tensor | None, generator: torch.Generator, indices: Tensor | None = None
    ) -> tuple[Tensor, dict]:
        out = _call_step(self.method, images, labels, generator, indices)
        return out.loss, out.metrics


def _call_step(
    method: Any, images: Tensor, labels: Tensor | None, generator: torch.Generator, indices: Any
) -> Any:
    """``training_step`` with ``indices`` only for a method that asks for them (``uses_indices``), so methods
    written against the three-argument contract keep working."""
    if indices is not None and getattr(method, "uses_indices", False):
        return method.training_step(images, labels, generator, indices=indices)
    return method.training_step(images, labels, generator)


def _capped(dataset: Dataset, cap: int, seed: int) -> Dataset:
    """A fixed seeded subset of at most ``cap`` samples (the monitor's bank / test set)."""
    n = len(dataset)  # type: ignore[arg-type]
    if n <= cap:
        return dataset
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values
    return Subset(dataset, idx.tolist())


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


class Trainer:
    """Train ``method`` on ``train_set`` as ``config`` says; :meth:`fit` runs (or resumes) the run.

    ``train_set`` / ``monitor_set`` return ``(uint8 image (3,H,W), label, index)`` (see :mod:`invarlab.data`);
    ``monitor_set`` is the held-out split the kNN monitor classifies (None: no monitor). The method must be
    built with the same seed on every rank (DDP also broadcasts rank 0's weights).

    Optional parts of the contract, each looked up with ``getattr``:

    - ``method.prepare_train_set(train_set, seed) -> Dataset`` is called once, first: a method may size its
      state from the data (PIRL's memory bank) or train on a derived dataset (frame pairs ``(2, 3, H, W)``
      from clips); the kNN monitor's bank still embeds ``train_set`` as given.
    - ``train_set.set_epoch(epoch)`` is called before each epoch's loader is built (seeded per-epoch draws
      inside a dataset, such as the frame gap of a pair, then replay exactly on resume).
    - ``method.uses_indices = True`` makes ``training_step`` receive ``indices=``: the samples' positions in
      the training set, ``(B,)`` int64 on the device (rows of a memory bank).
    """

    def __init__(
        self,
        config: TrainConfig,
        method: nn.Module,
        train_set: Dataset,
        monitor_set: Dataset | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        self.cfg = cfg = config
        self.rank, self.world_size = dist_info()
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        check_train_config(cfg, self.device.type)
        if cfg.batch_size % self.world_size:
            raise ConfigError(
                f"batch_size={cfg.batch_size} is not divisible by the {self.world_size} processes"
            )
        self.bank_set = train_set  # what the kNN monitor embeds: images as the data source gives them
        prepare = getattr(method, "prepare_train_set", None)
        if callable(prepare):
            train_set = prepare(train_set, mix_seed(cfg.seed, "train-set"))
        self.train_set, self.monitor_set = train_set, monitor_set
        n = len(train_set)  # type: ignore[arg-type]
        self.steps_per_epoch = n // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the training set has {n} images, fewer than one batch (batch_size={cfg.batch_size})"
            )
        self.total_steps = cfg.steps or cfg.epochs * self.steps_per_epoch
        self.num_classes = getattr(train_set, "num_classes", None)

        self.method = method.to(self.device)
        if cfg.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.compile:
            # Module.compile() compiles in place, so state-dict names (and checkpoints) stay unchanged.
            self.method.backbone.compile()
        self.ddp: nn.Module | None = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                _StepModule(self.method),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(method, "ddp_find_unused_parameters", False)),
                # Buffers are kept equal by construction (queues enqueue gathered keys) or are per-rank BN
                # running statistics; broadcasting them from rank 0 before every forward would send the whole
                # MoCo queue (32 MB at K = 65536, D = 128) each step for nothing.
                broadcast_buffers=False,
            )
        self.peak_lr = scaled_lr(cfg.optim.base_lr, cfg.batch_size)
        o = cfg.optim
        self.optimizer = build_optimizer(
            o.name,
            method.parameter_groups(o.weight_decay),
            self.peak_lr,
            o.weight_decay,
            o.momentum,
            o.nesterov,
            o.lars_eta,
        )
        self.schedule = WarmupCosine(
            self.peak_lr, self.total_steps, o.warmup_steps, o.min_lr_ratio, o.schedule == "cosine"
        )
        self.amp = resolve_amp(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        # The views generator lives on the CPU: the views module draws there, so views match on any device.
        self.generator = torch.Generator().manual_seed(mix_seed(cfg.seed, self.rank, "views"))
        self.step = 0
        self.skipped_steps = 0  # optim.nonfinite=skip: updates skipped in this process
        self._skips_in_a_row = 0
        self.run_dir = self._resolve_run_dir()

    # -------------------------------------------------------------------------------------------- setup
    def _resolve_run_dir(self) -> Path:
        if self.cfg.run_dir:
            return Path(self.cfg.run_dir).expanduser()
        name = getattr(self.method, "name", type(self.method).__name__)
        return Path("runs") / f"{name}-{config_hash(self.cfg, exclude=_RUN_KEYS)[:8]}"

    def _autocast(self) -> Any:
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _seed_globals(self) -> None:
        import random

        import numpy as np

        s = mix_seed(self.cfg.seed, self.rank, "globals")
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)  # noqa: NPY002  (the global one third-party code uses)

    def _write_config(self) -> None:
        resolved = dataclasses.replace(self.cfg, run_dir=str(self.run_dir))
        text = to_yaml(resolved)
        path = self.run_dir / "config.yaml"
        if path.is_file():
            old, new = _flat(yaml.safe_load(path.read_text()) or {}), _flat(yaml.safe_load(text))
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k != "resume")
            if changed:
                log.warning("%s: config changed on resume: %s", path, ", ".join(changed))
        path.write_text(text)

    def _newest_readable(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, with its content; an unreadable newer one (truncated, garbage)
        is named in a warning and renamed ``*.corrupt`` (kept for inspection, never resumed from again), and
        the previous one is tried. None when there is no checkpoint; an error when none of them loads."""
        found = ck.list_checkpoints(self.run_dir)
        bad = []
        for _, path in reversed(found):
            try:
                return path, ck.load_training_checkpoint(path)
            except CheckpointError as err:
                log.warning("%s: unreadable, resuming from the previous checkpoint instead (%s)", path, err)
                bad.append(path.name)
                if self.rank == 0:
                    with contextlib.suppress(OSError):
                        path.rename(path.with_name(path.name + ".corrupt"))
        if bad:
            raise CheckpointError(
                f"{self.run_dir}: none of its checkpoints can be read ({', '.join(bad)}, renamed *.corrupt); "
                "start afresh with resume=none in another run_dir, or restore a copy of a checkpoint"
            )
        return None

    def _resume(self) -> Path | None:
        resume = self.cfg.resume
        if resume == "none":
            latest = ck.find_latest(self.run_dir)
            if latest is not None:
                raise ConfigError(
                    f"{self.run_dir} already holds checkpoints (newest {latest.name}); resume=auto continues that "
                    "run, or choose another run_dir for a fresh one"
                )
            return None
        if resume == "auto":
            found = self._newest_readable()
            if found is None:
                return None
            path, ckpt = found
        else:
            path = Path(resume).expanduser()
            ckpt = ck.load_training_checkpoint(path)
        try:
            self.method.load_state_dict(ckpt["method_state"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: does not fit this method / optimiser ({str(e).splitlines()[0]}); was it written with "
                "another method or backbone config? Use another run_dir for a new run."
            ) from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        if len(rng) == self.world_size:
            ck.restore_rng(rng[self.rank], self.generator)
        else:  # a different process count cannot replay the same streams; keep the data order, reseed the rest
            log.warning(
                "%s: written by %d process(es), resumed with %d: random streams reseeded",
                path,
                len(rng),
                self.world_size,
            )
            self._seed_globals()
            self.generator.manual_seed(mix_seed(self.cfg.seed, self.rank, "views", ckpt["step"]))
        self.step = int(ckpt["step"])
        return path

    def _save(self) -> Path | None:
        """Gather every rank's RNG state; rank 0 writes the checkpoint atomically and prunes old ones."""
        rng = ck.capture_rng(self.generator)
        states = [rng]
        if self.world_size > 1:
            states = [None] * self.world_size
            dist.all_gather_object(states, rng)
        path = None
        if self.rank == 0:
            ckpt = make_checkpoint(
                self.method.backbone,
                None,
                method=getattr(self.method, "name", type(self.method).__name__),
                method_state=self.method.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler={**self.schedule.state_dict(), "step": self.step},
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                step=self.step,
                epoch=self.step // self.steps_per_epoch,
                world_size=self.world_size,
                rng=states,
                config=yaml.safe_load(to_yaml(dataclasses.replace(self.cfg, run_dir=str(self.run_dir)))),
            )
            path = ck.atomic_save(ckpt, ck.checkpoint_path(self.run_dir, self.step))
            ck.prune_checkpoints(self.run_dir, self.cfg.checkpoint.keep)
        if self.world_size > 1:
            dist.barrier()
        return path

    # ----------------------------------------------------------------------------------------- training
    def _loader(self, epoch: int, start: int) -> DataLoader:
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        sampler = EpochBatchSampler(
            len(self.train_set),
            self.cfg.batch_size,
            self.cfg.seed,
            epoch,
            self.rank,
            self.world_size,
            start,  # type: ignore[arg-type]
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            collate_fn=collate_uint8,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating a loader iterator would otherwise draw from torch's global RNG,
            # so a resumed run (which creates it at another point) would see different random numbers.
            generator=torch.Generator().manual_seed(mix_seed(self.cfg.seed, epoch, self.rank, "loader")),
        )

    def _train_step(
        self, images: Tensor, labels: Tensor, positions: list[int] | None = None
    ) -> tuple[float, dict[str, float], float]:
        t = self.step
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        indices = None
        if positions is not None and getattr(self.method, "uses_indices", False):
            indices = torch.as_tensor(positions, dtype=torch.long).to(self.device, non_blocking=True)
        if self.cfg.channels_last and images.ndim == 4:  # frame pairs (B, 2, 3, H, W) have no such layout
            images = images.contiguous(memory_format=torch.channels_last)
        lr = self.schedule.apply(self.optimizer.param_groups, t)
        with self._autocast():
            if self.ddp is not None:
                loss, metrics = self.ddp(images, labels, self.generator, indices)
            else:
                out = _call_step(self.method, images, labels, self.generator, indices)
                loss, metrics = out.loss, out.metrics
        bad = (~torch.isfinite(loss.detach().float())).float().reshape(1)
        if self.world_size > 1:  # every rank must stop together, or the others hang in the next all-reduce
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = dict(metrics)
        if bad.item():
            self._non_finite(f"loss is {float(loss.detach())}", t, lr, metrics)
            return float(loss.detach()), metrics, lr
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            self._clip_gradients(metrics)
            self.scaler.step(self.optimizer)  # fp16: the scaler itself skips steps with inf gradients
            self.scaler.update()
        else:
            loss.backward()
            # DDP's all-reduce has made the gradients equal on every rank: each takes the same branch.
            if not self._gradients_finite():
                self.optimizer.zero_grad(set_to_none=True)
                self._non_finite("a gradient is NaN or infinite", t, lr, metrics)
                return float(loss.detach()), metrics, lr
            self._clip_gradients(metrics)
            self.optimizer.step()
        self.method.on_after_optimizer_step(t, self.total_steps)
        self.step = t + 1
        self._skips_in_a_row = 0
        return float(loss.detach()), metrics, lr

    def _gradients_finite(self) -> bool:
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())

    def _non_finite(self, what: str, t: int, lr: float, metrics: dict[str, float]) -> None:
        """``optim.nonfinite``: stop before the update, or skip it (the step is consumed, the parameters and
        optimiser state untouched) and count it; ten skips in a row stop the run."""
        last = ck.find_latest(self.run_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        fix = (
            "Lower optim.base_lr, add optim.warmup_steps or set amp=none, then rerun (resume=auto restarts "
            "from that checkpoint)."
        )
        self._skips_in_a_row += 1
        if self.cfg.optim.nonfinite == "skip" and self._skips_in_a_row < _MAX_SKIPS_IN_A_ROW:
            self.skipped_steps += 1
            metrics["skipped_steps"] = float(self.skipped_steps)
            log.warning("step %d: %s; update skipped (%d skipped so far)", t + 1, what, self.skipped_steps)
            self.step = t + 1
            return
        again = f" ({self._skips_in_a_row} steps in a row)" if self._skips_in_a_row > 1 else ""
        raise NonFiniteLossError(
            f"{what} at step {t + 1}{again} (lr {lr:.4g}); stopped before the update, {where}. {fix}"
        )

    def _clip_gradients(self, metrics: dict[str, float]) -> None:
        """With ``optim.grad_clip > 0``: scale the gradients so their global L2 norm is at most that value
        (after DDP's all-reduce, so every rank clips alike) and record the norm before clipping."""
        limit = self.cfg.optim.grad_clip
        if limit > 0:
            params = [
                p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, limit))

    def run_monitor(self) -> float | None:
        """Weighted-kNN top-1 accuracy (percent) on the held-out set; None when there is none. Rank 0 only."""
        record = self._monitor_record()
        return None if record is None else record["top1"]

    def _log_monitor(self, logger: RunLogger, step: int) -> float | None:
        """Run the monitor and write its ``knn/top1`` and ``knn/chance`` (100 / classes) at ``step``; returns
        the top-1 (None when there is no monitor)."""
        record = self._monitor_record()
        if record is None:
            return None
        logger.write(step, max(step - 1, 0) // self.steps_per_epoch, record, tag="knn")
        return record["top1"]

    def _monitor_at_start(self, logger: RunLogger) -> None:
        """The step-0 monitor of a fresh run (the network at initialisation). Torch's global CPU generator is
        restored afterwards: the monitor's DataLoaders draw their base seed from it, and a method may use it
        during training (dropout), so ``knn.at_start`` must not shift that stream."""
        with torch.random.fork_rng(devices=[]):
            self._log_monitor(logger, 0)

    def _monitor_record(self) -> dict[str, float] | None:
        """``{"top1": %, "chance": 100 / classes}`` of the monitor now; None without a monitor, or off rank 0."""
        if self.monitor_set is None or self.rank != 0 or self.cfg.knn.every_epochs == 0:
            return None
        k = self.cfg.knn
        bank_set = _capped(self.bank_set, k.max_bank, mix_seed(self.cfg.seed, "bank"))
        test_set = _capped(self.monitor_set, k.max_test, mix_seed(self.cfg.seed, "test"))
        args = (k.batch_size, self.device, self._autocast, self.cfg.channels_last, self.cfg.data.num_workers)
        bank, bank_y = extract_features(self.method, bank_set, *args)
        test, test_y = extract_features(self.method, test_set, *args)
        keep = bank_y >= 0  # samples without a class (-1) cannot vote
        num_classes = self.num_classes or int(max(bank_y.max(), test_y.max())) + 1
        pred = knn_predict(bank[keep], bank_y[keep], test, num_classes, k.k, k.temperature)
        if not len(test_y):
            return None
        return {"top1": float((pred == test_y).float().mean() * 100), "chance": 100.0 / num_classes}

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train to ``total_steps`` (or stop early at step ``stop_at``, e.g. a time-limited job, with a
        checkpoint; the schedule still spans the full run). Resumes as ``config.resume`` says."""
        with run_lock(self.run_dir) if self.rank == 0 else contextlib.nullcontext():
            return self._fit(stop_at)

    def _fit(self, stop_at: int | None) -> TrainResult:
        cfg = self.cfg
        self._seed_globals()
        resumed = self._resume()
        end = min(self.total_steps, stop_at) if stop_at else self.total_steps
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ck.remove_stale_temporaries(self.run_dir)
            self._write_config()
        if self.rank == 0:
            log.info(
                "%s: %d steps (%d per epoch), batch %d on %d process(es), %s, amp %s, lr %.4g%s",
                self.run_dir,
                self.total_steps,
                self.steps_per_epoch,
                cfg.batch_size,
                self.world_size,
                self.device,
                self.amp,
                self.peak_lr,
                f"; resumed from {resumed} at step {self.step}" if resumed else "",
            )
        logger = RunLogger(
            self.run_dir,
            self.total_steps,
            self.step,
            enabled=self.rank == 0,
            tensorboard=cfg.log.tensorboard,
            progress=cfg.log.progress,
        )
        last_ckpt, last_metrics, knn_top1 = resumed, {}, None
        sums: dict[str, float] = {}
        self.method.train()
        try:
            if cfg.knn.at_start and self.step == 0:  # a resumed run already has its step-0 record
                self._monitor_at_start(logger)
            count, window_start = 0, time.perf_counter()
            while self.step < end:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                loader = self._loader(epoch, start)
                # The batch sampler is a pure function of (seed, epoch, start): iterating it beside the loader
                # gives each batch's positions in the training set, whatever the dataset returns as index.
                for positions, (images, labels, _) in zip(loader.batch_sampler, loader, strict=True):
                    loss, metrics, lr = self._train_step(images, labels, positions)
                    for key, v in {"loss": loss, **metrics}.items():
                        sums[key] = sums.get(key, 0.0) + float(v)
                    count += 1
                    s = self.step
                    if s % cfg.log.every == 0 or s == end:
                        elapsed = time.perf_counter() - window_start
                        last_metrics = {key: v / count for key, v in sums.items()}
                        last_metrics.update(lr=lr, img_per_s=count * cfg.batch_size / max(elapsed, 1e-9))
                        logger.write(s, (s - 1) // self.steps_per_epoch, last_metrics)
                        logger.advance(s, last_metrics["loss"], lr, last_metrics["img_per_s"])
                        sums, count, window_start = {}, 0, time.perf_counter()
                    else:
                        logger.advance(s)
                    paused = time.perf_counter()  # monitor and checkpoint time is not training throughput
                    epoch_done = s % self.steps_per_epoch == 0
                    every = cfg.knn.every_epochs
                    if every and (
                        (epoch_done and (s // self.steps_per_epoch) % every == 0) or s == self.total_steps
                    ):
                        top1 = self._log_monitor(logger, s)
                        if top1 is not None:
                            knn_top1 = top1
                    if (cfg.checkpoint.every and s % cfg.checkpoint.every == 0) or s == end:
                        last_ckpt = self._save() or last_ckpt
                    window_start += time.perf_counter() - paused
                    if s >= end:
                        break
        finally:
            logger.close()
        return TrainResult(
            self.run_dir, self.step, last_ckpt or ck.find_latest(self.run_dir), last_metrics, knn_top1
        )
