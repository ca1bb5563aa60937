"""MoCo v2 training throughput: invarlab against lightly's MoCo recipe; same data, batch, backbone, settings.

Run: .venv/bin/python benchmarks/train_throughput.py --threads 2 [--quick] [--steps N] [--rounds N]

Both sides train MoCo v2 in this process on the same rendered world images (uint8, ``tiny`` preset, cached):
ResNet-18 with the CIFAR stem at width 1 or 0.25, MLP head D-D-128, a queue of 4096 keys, tau 0.2, key
momentum 0.999, SGD (momentum 0.9, weight decay 5e-4), the same autocast (bf16 on CUDA and on CPUs with
native bf16, else fp32) and channels-last on both sides, so that only the pipeline differs.

- invarlab: the step ``Trainer.fit`` runs (``Trainer._train_step`` on batches of ``Trainer._loader``, without
  logging): uint8 batches, MoCo v2 views built batched on the device, ``MoCo.training_step``, backward, SGD,
  momentum update.
- lightly: its MoCo example loop (``examples/pytorch/moco.py``) on a dataset that hands PIL images to
  ``MoCoV2Transform`` as torchvision's CIFAR10 does, in DataLoader workers (each worker count of ``--workers``
  is its own line; the ratio is against the fastest), ``MoCoProjectionHead``, ``NTXentLoss(memory_bank_size=
  (4096, 128))``, ``update_momentum`` / ``deactivate_requires_grad``. Its backbone at width 1 is torchvision's
  resnet18 with the CIFAR stem; torchvision has no width multiplier, so at width 0.25 it is invarlab's ResNet,
  which has torchvision's modules and names (the FLOP counts of both sides are printed and must agree).

Blocks of ``--steps`` steps alternate between the sides (A, B, A, B ...) for ``--rounds`` rounds after one
warm-up block each; each block starts a fresh lightly DataLoader iterator and drops the batches its workers
made while starting, so blocks measure the steady state. A table line is the median images/s over rounds
[min-max]. Then a profile (explicit timers that synchronise the device) and achieved model FLOP/s (forward
and backward of the query encoder, forward of the key encoder, loss; ``FlopCounterMode``) as a fraction of
this machine's best large matmul (fp32, and bf16 when the run uses it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# libgomp's default (ACTIVE) wait policy spins between parallel regions: on 2 cores shared with other jobs
# that made 2-thread steps 4x slower than 1-thread ones (15 vs 57-65 img/s, the same model). It must be set
# before torch loads OpenMP; run with OMP_WAIT_POLICY=ACTIVE in the environment to measure the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from invarlab.train.api import build_world_datasets
from invarlab.train.config import DataConfig
from invarlab.train.util import resolve_amp
from moco_sides import Case, InvarlabSide, LightlySide, Profile, sync

# Sized so that a CPU block takes 5-20 s: full-width ResNet-18 MoCo steps run at 2-10 img/s on 2 AVX2 cores.
CPU_CASES = [Case(0.25, 32, 256, 2), Case(0.25, 64, 128, 2), Case(1.0, 32, 32, 3), Case(1.0, 64, 16, 2)]
CUDA_CASES = [Case(w, s, 256, 20) for w in (0.25, 1.0) for s in (32, 64)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """This machine's best FLOP/s on one large square matmul (``2 n^3`` FLOPs) of ``dtype``. Measured again
    before every case and the best kept: on a shared machine one measurement can fall in a busy moment."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------------------------- main
def print_profile(title: str, prof: Profile, steps: int, batch: int, total: float) -> None:
    seconds = dict(prof.seconds)
    if "step" in seconds:  # invarlab: the rest of Trainer._train_step outside the wrapped parts
        inner = sum(v for k, v in seconds.items() if k not in ("data", "step"))
        seconds["other (to device, lr, queue copy, metrics, NaN check)"] = max(
            0.0, seconds.pop("step") - inner
        )
    print(f"  profile {title}: {steps * batch / total:,.0f} img/s while profiled, ms per step:")
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<52s} {1e3 * s / steps:9.1f} ms {100 * s / total:5.1f}%")


def run_case(case: Case, args: argparse.Namespace, device: torch.device, amp: str, peaks: dict) -> None:
    data, _ = build_world_datasets(
        DataConfig(world_preset="tiny", world_overrides=[f"datasets.object_centric.num_images={args.images}"],
                   image_size=case.size, held_out_fraction=0.0), seed=0)  # fmt: skip
    torch.manual_seed(0)
    sides: dict[str, InvarlabSide | LightlySide] = {
        "invarlab": InvarlabSide(case, data, device, amp, args.cl)
    }
    if args.compile:  # the Trainer's compile=true: its cold start falls in the warm-up block
        sides["invarlab, compiled"] = InvarlabSide(case, data, device, amp, args.cl, compile=True)
    for w in args.workers:
        sides[f"lightly, {w} worker{'s' if w != 1 else ''}"] = LightlySide(
            case, data, w, device, amp, args.cl
        )
    flops = {name: side.flops_per_image(case.size) for name, side in sides.items() if "compiled" not in name}
    flops.setdefault("invarlab, compiled", flops["invarlab"])
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():
        side.block(max(1, case.steps // 2))  # warm-up: allocator, oneDNN / cuDNN kernel choice
    for r in range(args.rounds):
        order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
        for name, side in order:
            rates[name].append(case.steps * case.batch / side.block(case.steps))
    for key in peaks:
        peaks[key] = max(peaks[key], matmul_peak(device, DTYPES[key]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{case} (amp {amp}, channels_last {args.cl}, {args.rounds} rounds of {case.steps} steps; "
          f"load average {load:.1f}; best matmul so far "
          + ", ".join(f"{p / 1e9:,.1f} GFLOP/s {k}" for k, p in peaks.items()) + ")")  # fmt: skip
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, v in rates.items():
        achieved = flops[name] * med[name]
        shares = " / ".join(f"{100 * achieved / peak:4.1f}% of {k} matmul" for k, peak in peaks.items())
        print(f"  {name:<22s} {med[name]:9.1f} img/s [{min(v):8.1f} - {max(v):8.1f}]  "
              f"{flops[name] / 1e6:7.1f} MFLOP/img {achieved / 1e9:7.2f} GFLOP/s = {shares}")  # fmt: skip
    best = max((n for n in med if n.startswith("lightly")), key=med.__getitem__)
    for name in (n for n in med if n.startswith("invarlab")):
        print(f"  ratio {name} / best lightly ({best}): {med[name] / med[best]:.2f}x")
    # Profiled one step at a time, alternating, so that both profiles see the same machine load.
    steps = args.profile_steps or max(4, case.steps)
    profiled = ("invarlab", best)
    profs, totals = {n: Profile(device) for n in profiled}, dict.fromkeys(profiled, 0.0)
    for i in range(steps):
        for name in profiled if i % 2 == 0 else profiled[::-1]:
            totals[name] += sides[name].block(1, profs[name])
    for name in profiled:
        print_profile(name, profs[name], steps, case.batch, totals[name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="only the first case, 2 rounds")
    ap.add_argument("--steps", type=int, default=0, help="steps per timed block (0: the case's own)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    ap.add_argument("--workers", type=str, default="", help="lightly DataLoader workers to try (CPU: 0,1,2)")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"), help="autocast on both sides")
    ap.add_argument("--no-channels-last", dest="cl", action="store_false", help="NCHW on both sides")
    ap.add_argument(
        "--compile", action="store_true", help="add invarlab with compile=true (cold start: ~1 min)"
    )
    ap.add_argument("--cases", type=str, default="", help="e.g. 0.25x32x256,1x64x16 (width x size x batch)")
    ap.add_argument(
        "--images", type=int, default=2048, help="rendered world images (cached after the first run)"
    )
    ap.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="profiled steps per side (0: 4 or the block length, the larger)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = resolve_amp(args.amp, device)
    amp = "none" if amp == "fp16" else amp  # one autocast dtype for both sides, no loss scaler
    cores = os.cpu_count() or 1
    default_workers = "0,1,2" if device.type == "cpu" else f"{cores // 4},{cores // 2},{cores}"
    args.workers = [int(w) for w in (args.workers or default_workers).split(",")]
    cases = CUDA_CASES if device.type == "cuda" else CPU_CASES
    if args.cases:
        cases = [
            Case(float(w), int(s), int(b), 1) for w, s, b in (c.split("x") for c in args.cases.split(","))
        ]
    if args.quick:
        cases, args.rounds = cases[:1], 2
    # bf16 only where the run computes in it: a CPU without native bf16 emulates it (2048^3 matmul: minutes).
    peaks = {k: matmul_peak(device, DTYPES[k]) for k in ("fp32", "bf16") if k == "fp32" or amp == "bf16"}
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"torch {torch.__version__}, {where}, amp {amp}; matmul peak "
          + ", ".join(f"{p / 1e9:,.1f} GFLOP/s {k}" for k, p in peaks.items()))  # fmt: skip
    for case in cases:
        case.steps = args.steps or case.steps
        run_case(case, args, device, amp, peaks)


if __name__ == "__main__":
    main()
