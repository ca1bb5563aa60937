"""Label propagation speed (P2's DAVIS protocol, ``invarlab.eval.propagation``): frames/s at the world clips'
size and at DAVIS size, for several query tiles, with the defaults top-k 10, context 20, radius 12, tau 0.05.

Run: .venv/bin/python benchmarks/propagation_speed.py --threads 2 [--only world,davis] [--tiles 8,16,32]

- ``world``: a quick-start world clip (16 frames of 32 px; ``configs/world/quickstart.yaml``) through the
  quick-start network (ResNet-18 at width 0.25, CIFAR stem) at layer3 with ``stride_change=stride``: maps of
  64 x 16 x 16. The whole clip is propagated (``label_propagation``: frame t has min(t, 20) + 1 context maps).
- ``davis``: a 480 x 854 frame (DAVIS-2017 480p) through ResNet-18 (ImageNet stem) at layer3 with
  ``stride_change=stride`` (stride 8): maps of 256 x 60 x 107 (``--channels 1024`` for ResNet-50's layer3).
  One frame in the steady state, with the full context of 1 + 20 maps (``propagate_frame``); the first 20
  frames of a clip have fewer. The map extraction and the upsampling + argmax to 480 x 854 are timed apart.

Maps are random (seeded) and L2-normalised, labels the soft one-hot of a random 4-label mask (background + 3
objects): the cost does not depend on their values. Each figure is the median over ``--reps`` runs after one
warm-up. The last part profiles one DAVIS frame (``torch.profiler``, self CPU time per operator) and gives the
similarity product's achieved FLOP/s against this machine's best large matmul.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_throughput.py

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.eval.dense import DenseNet, upsample
from invarlab.eval.features import Encoder
from invarlab.eval.propagation import context_frames, label_propagation, propagate_frame, soft_labels
from invarlab.nets.backbones import build_backbone

TOPK, CONTEXT, RADIUS, TAU, LABELS = 10, 20, 12.0, 0.05, 4


def seconds(fn: Callable[[], object], reps: int) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_labels(frames: int, height: int, width: int, size: tuple[int, int], g: torch.Generator) -> Tensor:
    """Soft labels ``(frames, LABELS, h, w)`` of random block masks (objects 1..3 on background 0)."""
    masks = torch.randint(0, LABELS, (frames, 1, height // 8 + 1, width // 8 + 1), generator=g)
    masks = F.interpolate(masks.float(), scale_factor=8, mode="nearest")[:, 0, :height, :width].long()
    return torch.stack([soft_labels(m, list(range(1, LABELS)), size) for m in masks])


def maps_net(stem: str, width: float, image_size: int | None) -> DenseNet:
    backbone = build_backbone("resnet18", stem, width, num_classes=0)
    return DenseNet(Encoder(backbone, None, "random", "random"), "layer3", "stride", image_size)


def similarity_flops(h: int, w: int, channels: int, maps: int, tile: int) -> float:
    """Multiply-adds x 2 of the tiled similarity product of one frame: every tile's queries against its
    window grown by the radius, in ``maps`` context maps (the window is a square; the radius masks it after)."""
    r, total = math.floor(RADIUS), 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            window = (min(h, y1 + r) - max(0, y0 - r)) * (min(w, x1 + r) - max(0, x0 - r))
            total += (y1 - y0) * (x1 - x0) * window
    return 2.0 * channels * maps * total


def matmul_peak(repeats: int = 5) -> float:
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds(lambda: a @ b, repeats)


def world(args: argparse.Namespace, g: torch.Generator) -> None:
    frames, size = 16, 32
    net = maps_net("cifar", 0.25, size)
    images = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g)
    feats = net(images)
    _, c, h, w = feats.shape
    first = random_labels(1, size, size, (h, w), g)[0]
    extract = seconds(lambda: net(images), args.reps)
    print(f"\nworld clip: {frames} frames of {size} px -> layer3 maps {c} x {h} x {w}; extraction "
          f"{frames / extract:,.0f} frames/s ({1e3 * extract / frames:.2f} ms/frame)")  # fmt: skip
    print("| tile | propagation s/clip | frames/s (15 propagated) | ms/frame |")
    print("| --- | --- | --- | --- |")
    for tile in args.tiles:
        s = seconds(lambda t=tile: label_propagation(feats, first, TOPK, CONTEXT, RADIUS, TAU, t), args.reps)
        print(f"| {tile} | {s:.3f} | {(frames - 1) / s:,.1f} | {1e3 * s / (frames - 1):.1f} |")


def davis(args: argparse.Namespace, g: torch.Generator) -> None:
    height, width, c = 480, 854, args.channels
    image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=g)
    net = maps_net("imagenet", 1.0, None)
    extract = seconds(lambda: net(image), args.reps)
    _, c18, h, w = net(image).shape
    maps = len(context_frames(CONTEXT + 1, CONTEXT))  # 21: the first frame and the 20 latest
    keys = F.normalize(torch.randn(maps, c, h, w, generator=g), dim=1)
    query = F.normalize(torch.randn(c, h, w, generator=g), dim=1)
    values = random_labels(maps, height, width, (h, w), g)
    y = propagate_frame(query, keys, values, TOPK, RADIUS, TAU, 16)
    up = seconds(lambda: upsample(y[None], (height, width))[0].argmax(0), args.reps)
    print(f"\nDAVIS-size frame: {height} x {width} -> layer3 maps {c} x {h} x {w} (ResNet-18 layer3 has {c18}), "
          f"{maps} context maps, {LABELS} labels; ResNet-18 map extraction {1e3 * extract:,.0f} ms/frame, "
          f"upsample + argmax {1e3 * up:.1f} ms/frame")  # fmt: skip
    print(
        "| tile | propagation s/frame | frames/s | with extraction: frames/s | similarity GFLOP | GFLOP/s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for tile in args.tiles:
        s = seconds(lambda t=tile: propagate_frame(query, keys, values, TOPK, RADIUS, TAU, t), args.reps)
        flops = similarity_flops(h, w, c, maps, tile)
        print(f"| {tile} | {s:.2f} | {1 / s:.3f} | {1 / (s + extract + up):.3f} | {flops / 1e9:.1f} "
              f"| {flops / 1e9 / s:.1f} |")  # fmt: skip
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            propagate_frame(query, keys, values, TOPK, RADIUS, TAU, 16)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"profile, one frame at tile 16 ({total / 1e6:.2f} s self CPU in operators), top operators:")
        for e in events[:8]:
            print(f"  {e.key:<28s} {e.self_cpu_time_total / 1e6:7.2f} s {100 * e.self_cpu_time_total / total:5.1f}%"
                  f"  x{e.count}")  # fmt: skip
        print(f"best matmul on this machine: {matmul_peak() / 1e9:.1f} GFLOP/s fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", default="world,davis", help="which sizes: world, davis")
    ap.add_argument("--tiles", default="8,16,32", help="query tile sides (16 is the default)")
    ap.add_argument("--channels", type=int, default=256, help="DAVIS map channels (ResNet-18 layer3: 256)")
    ap.add_argument("--reps", type=int, default=1, help="timed runs per figure after a warm-up")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the DAVIS profile")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tiles = [int(t) for t in args.tiles.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, load average {load:.1f}; "
          f"top-k {TOPK}, context {CONTEXT}, radius {RADIUS:g}, tau {TAU}")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in args.only.split(","):
            {"world": world, "davis": davis}[name](args, g)


if __name__ == "__main__":
    main()
