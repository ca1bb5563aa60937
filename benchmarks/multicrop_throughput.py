"""P2 multi-crop training throughput: invarlab's MoCo step with 2 large + N small crops (constrained and not)
against the two-crop baseline and against lightly's multi-crop transform feeding the same model and loss.

Run: .venv/bin/python benchmarks/multicrop_throughput.py --threads 2 [--case 32|64] [--rounds N] [--workers 0,1]

Every line trains the same network in this process (ResNet-18 with the CIFAR stem at width 0.25, head
D-D-128, queue 1024, tau 0.2, key momentum 0.99, SGD with weight decay 5e-4: configs/p2's CPU presets) through
invarlab's ``Trainer._train_step`` (batch on the device, autocast, loss, backward, SGD, momentum update), on the
same rendered world images (uint8, ``tiny`` preset, cached). Only where the crops come from differs:

- ``invarlab two-crop``: MoCo v2's two views at the image's size (configs/p2/moco.yaml), batched on the device;
- ``invarlab multi-crop`` / ``constrained``: :func:`invarlab.views.multicrop.multicrop_views` (configs/p2/
  multicrop.yaml, constrained.yaml): 2 large crops (crop 1 the key) + N small ones, batched on the device; the
  step (``invarlab.methods.moco_p2.p2_step``) runs one backbone forward per query crop size;
- ``lightly SwaVTransform``: lightly 1.6.0's multi-crop transform (``SwaVTransform``: ``MultiCropTranform``
  with SwaV's view recipe; its ``crop_counts=(2, N)`` gives 2 large + N small crops) set to the same recipe
  (scales (0.2, 1) and (0.05, 0.14), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, the case's blur,
  ImageNet normalisation) on PIL images in ``W`` DataLoader workers (each worker count of ``--workers`` is a
  line). Its crops replace ``multicrop_views`` inside the same ``p2_step``: same model, loss and optimiser.
  lightly has no constrained cropping, so it is the peer of the unconstrained line;
- ``lightly ..., one forward per crop``: as above but every query crop through the backbone on its own, as
  lightly's SwaV / DINO example loops do (no multi-crop wrapper); BatchNorm then sees B crops at a time.

Blocks of ``steps`` steps alternate between the lines (forward order, then reversed) for ``--rounds`` rounds
after one warm-up block each; each lightly block starts a fresh DataLoader iterator and drops the batches its
workers made while starting, so blocks measure the steady state. A line is the median images/s over the rounds
[min-max]; CPU time per image (this process, all threads; 0-worker lines only) is less sensitive to other
processes on the machine than the wall-clock rate; the crops column is the time per step spent making crops
(CPU: measured inside the timed blocks; accelerators: separate single steps).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# See train_throughput.py: libgomp's spinning wait policy makes 2-thread steps far slower on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from invarlab.methods import MethodConfig, build_method, moco_p2
from invarlab.train.api import build_world_datasets
from invarlab.train.config import DataConfig, TrainConfig
from invarlab.train.loop import Trainer
from invarlab.train.util import resolve_amp
from invarlab.views.multicrop import MultiCropViews
from moco_sides import PilImages, steady_batches, sync
from torchvision_compat import import_lightly

import_lightly()
from lightly.transforms import SwaVTransform  # noqa: E402

QUEUE, PROJ_DIM, TAU, MOMENTUM, BASE_LR, WD = 1024, 128, 0.2, 0.99, 0.5, 5e-4


@dataclass
class Case:
    image: int  # rendered image side; the two-crop views have this side
    large: int  # side of the 2 large crops
    small: int  # side of the small crops
    n_small: int
    batch: int
    steps: int  # per timed block
    rounds: int
    blur_p: float  # the same on every line

    def __str__(self) -> str:
        return (f"{self.image} px images: two-crop 2 x {self.image} vs multi-crop 2 x {self.large} + "
                f"{self.n_small} x {self.small}, batch {self.batch}, blur p {self.blur_p:g}")  # fmt: skip


# 32 px: configs/p2 (view_size 24, multicrop_size 14, blur off at this size); 64 px: scaled_sizes(64) = (46, 27)
# with MoCo v2's blur. Batches sized so that a block takes a few seconds on 2 shared cores; single-step blocks
# and many rounds, because the load of a shared machine drifts within seconds.
CASES = {"32": Case(32, 24, 14, 4, 64, 1, 7, 0.0), "64": Case(64, 46, 27, 4, 32, 1, 5, 0.5)}


def make_trainer(
    case: Case, data: Dataset, device: torch.device, amp: str, cl: bool, **p2: object
) -> Trainer:
    """invarlab's Trainer on the CPU presets' MoCo; ``p2`` holds the P2 options (none: two-crop MoCo)."""
    multicrop = bool(p2)
    method_cfg = MethodConfig(
        name="moco", backbone="resnet18", stem="cifar", width=0.25, proj_dim=PROJ_DIM, temperature=TAU,
        queue_size=QUEUE, momentum=MOMENTUM, view_size=case.large if multicrop else case.image,
        view_overrides={"blur_p": case.blur_p}, **p2,
    )  # fmt: skip
    cfg = TrainConfig(method=method_cfg, batch_size=case.batch, steps=10**6, amp=amp, seed=0)
    cfg.channels_last, cfg.device = cl, str(device)
    cfg.run_dir = "/tmp/invarlab-multicrop-unused"  # _train_step never writes
    cfg.optim.base_lr, cfg.optim.weight_decay = BASE_LR, WD
    cfg.log.tensorboard = cfg.log.progress = False
    cfg.knn.every_epochs = 0
    method = build_method(method_cfg)
    method.train()
    return Trainer(cfg, method, data, device=device)


def timed(fn: Callable, seconds: list[float], device: torch.device) -> Callable:
    def wrapper(*args: object, **kwargs: object) -> object:
        sync(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        seconds[0] += time.perf_counter() - start
        return out

    return wrapper


def step_flops(line: InvarlabLine, batch: int) -> float:
    """Model FLOPs per image of one training step (query crops forward + backward, key forward, loss; views
    and the optimiser add no matmul or convolution), counted on one real step of ``line``."""
    with FlopCounterMode(display=False) as counter:
        line.block(1)
    return counter.get_total_flops() / batch


class InvarlabLine:
    """invarlab's step as ``Trainer.fit`` runs it: uint8 batches, crops made on the device inside the step."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.device = trainer, trainer.device
        self.batches = self._batches()

    def _batches(self) -> Iterator:
        while True:
            epoch, start = divmod(self.trainer.step, self.trainer.steps_per_epoch)
            yield from self.trainer._loader(epoch, start)

    def block(self, steps: int, views_s: list[float] | None = None) -> float:
        """Seconds for ``steps`` steps; with ``views_s``, add the time spent making crops to ``views_s[0]``."""
        method, patched = self.trainer.method, contextlib.ExitStack()
        if views_s is not None:
            if getattr(method, "p2", False):
                fn = moco_p2.multicrop_views
                moco_p2.multicrop_views = timed(fn, views_s, self.device)
                patched.callback(setattr, moco_p2, "multicrop_views", fn)
            else:
                method.make_views = timed(method.make_views, views_s, self.device)
                patched.callback(delattr, method, "make_views")
        with patched:
            sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                images, labels, _ = next(self.batches)
                self.trainer._train_step(images, labels)
            sync(self.device)
            return time.perf_counter() - start


class LightlyLine:
    """lightly's ``SwaVTransform`` crops from DataLoader workers, fed to the same ``p2_step``."""

    def __init__(self, trainer: Trainer, case: Case, data: Dataset, workers: int, per_crop: bool) -> None:
        self.trainer, self.case, self.workers, self.per_crop = trainer, case, workers, per_crop
        self.device, self.cl = trainer.device, trainer.cfg.channels_last
        transform = SwaVTransform(
            crop_sizes=(case.large, case.small), crop_counts=(2, case.n_small), crop_min_scales=(0.2, 0.05),
            crop_max_scales=(1.0, 0.14), hf_prob=0.5, cj_prob=0.8, cj_strength=1.0, cj_bright=0.4,
            cj_contrast=0.4, cj_sat=0.4, cj_hue=0.1, random_gray_scale=0.2, gaussian_blur=case.blur_p,
            sigmas=(0.1, 2.0),
        )  # fmt: skip
        self.dataset = PilImages(data, transform)
        self.generator = torch.Generator().manual_seed(0)
        self.dummy = torch.zeros(case.batch, 3, 1, 1, dtype=torch.uint8)  # p2_step reads only its device

    def _views(self, crops: list[Tensor]) -> MultiCropViews:
        crops = [c.to(self.device, non_blocking=True) for c in crops]
        if self.cl:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        empty = torch.zeros(0, crops[0].shape[0], dtype=torch.bool, device=self.device)
        views = MultiCropViews(crops, [], [], empty, key_index=1)
        if self.per_crop:  # lightly's loops: one backbone forward per crop
            views.queries_by_size = lambda: [(views.crops[i].shape[-1], [i]) for i in views.query_indices]
        return views

    def block(self, steps: int, views_s: list[float] | None = None) -> float:
        batches = steady_batches(
            self.dataset, self.case.batch, steps, self.workers, self.generator, self.device
        )
        pending: list[MultiCropViews] = []
        original = moco_p2.multicrop_views
        moco_p2.multicrop_views = lambda images, config, generator: pending.pop()
        try:
            sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                crops, labels = next(batches)
                pending.append(self._views(crops))
                if views_s is not None:
                    sync(self.device)
                    views_s[0] += time.perf_counter() - t0
                self.trainer._train_step(self.dummy, labels)
            sync(self.device)
            seconds = time.perf_counter() - start
        finally:
            moco_p2.multicrop_views = original
        del batches  # stops the workers before the next line's block
        return seconds


def run_case(case: Case, args: argparse.Namespace, device: torch.device, amp: str) -> None:
    data, _ = build_world_datasets(
        DataConfig(world_preset="tiny", world_overrides=[f"datasets.object_centric.num_images={args.images}"],
                   image_size=case.image, held_out_fraction=0.0), seed=0)  # fmt: skip
    case.steps, case.rounds = args.steps or case.steps, args.rounds or case.rounds
    mc = {"multicrop_n": case.n_small, "multicrop_size": case.small}
    torch.manual_seed(0)
    lines: dict[str, InvarlabLine | LightlyLine] = {
        "invarlab two-crop": InvarlabLine(make_trainer(case, data, device, amp, args.cl)),
        "invarlab multi-crop": InvarlabLine(make_trainer(case, data, device, amp, args.cl, **mc)),
        "invarlab multi-crop, constrained": InvarlabLine(
            make_trainer(case, data, device, amp, args.cl, **mc, constrained=True)
        ),
    }
    for w in args.workers:
        lines[f"lightly SwaVTransform, {w} worker{'s' if w != 1 else ''}"] = LightlyLine(
            make_trainer(case, data, device, amp, args.cl, **mc), case, data, w, per_crop=False
        )
    for w in args.per_crop_workers:
        lines[f"lightly SwaVTransform, {w} worker{'s' if w != 1 else ''}, one forward per crop"] = (
            LightlyLine(make_trainer(case, data, device, amp, args.cl, **mc), case, data, w, per_crop=True)
        )
    flops = {
        k: step_flops(lines[n], case.batch)
        for k, n in (("two", "invarlab two-crop"), ("mc", "invarlab multi-crop"))
    }
    rates: dict[str, list[float]] = {name: [] for name in lines}
    for line in lines.values():
        line.block(max(1, case.steps // 2))  # warm-up: allocator, oneDNN kernel choice
    # On the CPU the crop time is taken inside the timed blocks (synchronising is a no-op there); on an
    # accelerator it comes from separate profiled steps, so the timed blocks stay untouched.
    inline = device.type == "cpu"
    crops = {name: [0.0] for name in lines}
    total, cpu = dict.fromkeys(lines, 0.0), dict.fromkeys(lines, 0.0)
    for r in range(case.rounds):
        order = list(lines.items()) if r % 2 == 0 else list(lines.items())[::-1]
        for name, line in order:
            cpu_start = time.process_time()  # this process, all threads (not DataLoader workers)
            seconds = line.block(case.steps, crops[name] if inline else None)
            cpu[name] += time.process_time() - cpu_start
            rates[name].append(case.steps * case.batch / seconds)
            total[name] += seconds
    profiled = case.rounds * case.steps
    if not inline:  # alternating single steps, so that every line sees the same load
        crops, total = {name: [0.0] for name in lines}, dict.fromkeys(lines, 0.0)
        profiled = max(2, case.steps)
        for i in range(profiled):
            for name, line in list(lines.items()) if i % 2 == 0 else list(lines.items())[::-1]:
                total[name] += line.block(1, crops[name])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    med = {name: statistics.median(v) for name, v in rates.items()}
    base, mc_name = med["invarlab two-crop"], "invarlab multi-crop"
    pixels = {"two": 2 * case.image**2, "mc": 2 * case.large**2 + case.n_small * case.small**2}
    print(f"\n{case} (amp {amp}, channels_last {args.cl}, {case.rounds} rounds of {case.steps} steps; "
          f"load average {load:.1f}; crop pixels per image: two-crop {pixels['two']:,}, multi-crop "
          f"{pixels['mc']:,}; model FLOPs per image: two-crop {flops['two'] / 1e6:,.1f} M, multi-crop "
          f"{flops['mc'] / 1e6:,.1f} M = {flops['mc'] / flops['two']:.2f}x)")  # fmt: skip
    print(f"| line | img/s (median [min - max]) | vs two-crop | {mc_name} / line | crops ms/step (share) "
          "| CPU ms/img |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, v in rates.items():
        ms = 1e3 * crops[name][0] / profiled
        share = 100 * crops[name][0] / total[name]
        workers = getattr(lines[name], "workers", 0)
        cpu_ms = f"{1e3 * cpu[name] / (profiled * case.batch):.1f}" if not workers else "-"
        print(f"| {name} | {med[name]:,.1f} [{min(v):,.1f} - {max(v):,.1f}] | {med[name] / base:.2f}x "
              f"| {med[mc_name] / med[name]:.2f}x | {ms:,.0f} ({share:.0f}%) | {cpu_ms} |")  # fmt: skip
    lightly = [n for n in med if n.startswith("lightly") and "per crop" not in n]
    if lightly:
        best = max(lightly, key=med.__getitem__)
        print(f"ratio {mc_name} / best lightly ({best}): {med[mc_name] / med[best]:.2f}x")
    print("crops: invarlab making its crops inside the step; lightly waiting for the loader's batch (the crops "
          "themselves with 0 workers) and moving it to the device. CPU: this process's CPU time over the timed "
          "blocks (all threads), per image; not given for lines whose crops come from worker processes")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--case", default="32", choices=sorted(CASES), help="image size of the case to run")
    ap.add_argument("--steps", type=int, default=0, help="steps per timed block (0: the case's own)")
    ap.add_argument("--rounds", type=int, default=0, help="alternating rounds (0: the case's own)")
    ap.add_argument("--workers", default="0,1", help="lightly DataLoader workers, one line each")
    ap.add_argument(
        "--per-crop-workers", default="", help="workers of one-forward-per-crop lines, e.g. 0 (default: none)"
    )
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"), help="autocast on every line")
    ap.add_argument("--no-channels-last", dest="cl", action="store_false", help="NCHW everywhere")
    ap.add_argument("--images", type=int, default=2048, help="rendered world images (cached)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workers = [int(w) for w in args.workers.split(",") if w != ""]
    args.per_crop_workers = [int(w) for w in args.per_crop_workers.split(",") if w != ""]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = resolve_amp(args.amp, device)
    amp = "none" if amp == "fp16" else amp  # one autocast dtype everywhere, no loss scaler
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    run_case(CASES[args.case], args, device, amp)


if __name__ == "__main__":
    main()
