"""MoCo v2 view throughput: invarlab's batched recipe against torchvision v2 transforms applied per sample.

Run: .venv/bin/python benchmarks/views_speed.py [--seconds 1.5] [--batch 256] [--threads N]
Both sides start from uint8 (3, S, S) images and build S x S normalised float views with the same recipe
(RandomResizedCrop scale (0.2, 1) antialiased, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
Gaussian blur sigma [0.1, 2] kernel 13 p=0.5, flip, normalise), in this process with the same threads; torchvision
runs one sample at a time as a DataLoader worker would. One line per side and size, ending in views/s, then
the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from invarlab.views import mocov2_views, ops
from torchvision_compat import import_torchvision

import_torchvision()
from torchvision.transforms import v2  # noqa: E402


def rate(fn, views_per_call: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += views_per_call
    return done / (time.perf_counter() - start)


def torchvision_recipe(size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(ops.gaussian_kernel_size(2.0), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(ops.IMAGENET_MEAN), list(ops.IMAGENET_STD)),
        ]
    )


def measure(size: int, batch: int, seconds: float) -> tuple[float, float]:
    """views/s of invarlab's batched MoCo v2 views and of torchvision v2 per sample, at ``size`` pixels."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    ours = rate(lambda: mocov2_views(images, size, generator, n_views=2), 2 * batch, seconds)
    recipe = torchvision_recipe(size)
    subset = images[:64]  # per-sample speed does not depend on the batch; keeps each call short
    theirs = rate(lambda: [recipe(img) for img in subset for _ in range(2)], 2 * len(subset), seconds)
    return ours, theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.5, help="measuring time per line")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for size in (32, 64):
        ours, theirs = measure(size, args.batch, args.seconds)
        print(f"invarlab batched     {size:3d}x{size:<3d} {ours:9.0f} views/s", flush=True)
        print(f"torchvision v2 each  {size:3d}x{size:<3d} {theirs:9.0f} views/s", flush=True)
        print(f"ratio                {size:3d}x{size:<3d} {ours / theirs:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
