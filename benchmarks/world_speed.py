"""Rendering throughput of the world: images/s per kind, resolution and batch size, one line each.

Run: .venv/bin/python benchmarks/world_speed.py [--quick] [--eager]
Rendering is paid once per dataset (then cached); these numbers say how long that first time takes.
The first call of each shape compiles the renderer (tens of seconds) and is excluded as warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch

from invarlab.world.config import DatasetSpec, WorldConfig
from invarlab.world.datasets import plan
from invarlab.world.renderer import World


def measure(
    kind: str,
    resolution: int,
    batch: int,
    supersample: int,
    compile: bool,
    seconds: float,
    adaptive: bool = True,
) -> float:
    cfg = WorldConfig()
    cfg.render.resolution, cfg.render.batch_size = resolution, batch
    cfg.render.supersample, cfg.render.compile = supersample, compile
    cfg.render.adaptive = adaptive
    world = World(cfg)
    spec = DatasetSpec(
        kind="scene_centric" if kind == "scene" else "clips" if kind == "clip frame" else kind,
        num_images=batch * 4,
        clip_length=16,
    )
    factors, _ = plan(spec, cfg)
    world.render(factors.slice(0, batch))  # warm-up: compilation, photo bank, catalogue
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        k = (done // batch) % 4
        world.render(factors.slice(k * batch, (k + 1) * batch))
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the 64x64 default-quality lines")
    ap.add_argument("--eager", action="store_true", help="do not torch.compile the renderer")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, compile={not args.eager}")
    cases = [("object_centric", 64, 64, 2, True), ("scene", 64, 32, 2, True), ("clip frame", 64, 32, 2, True)]
    if not args.quick:
        cases += [
            ("object_centric", 64, 64, 2, False),
            ("object_centric", 64, 64, 1, True),
            ("object_centric", 32, 128, 2, True),
            ("object_centric", 96, 32, 2, True),
            ("object_centric", 128, 16, 2, True),
            ("object_centric", 64, 16, 2, True),
            ("object_centric", 64, 256, 2, True),
        ]
    for kind, res, batch, ss, adaptive in cases:
        rate = measure(kind, res, batch, ss, not args.eager, args.seconds, adaptive)
        mode = "adaptive" if adaptive else "full"
        print(
            f"{kind:15s} {res:4d}x{res:<4d} batch {batch:4d} supersample {ss} {mode:8s} {rate:8.1f} img/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
