"""Rendering throughput of the world: images/s per kind, resolution and batch size, one line each.

Run: .venv/bin/python benchmarks/world_speed.py [--quick] [--eager]
Rendering is paid once per dataset (then cached); these numbers say how long that first time takes.
The first call of each shape compiles the renderer (tens of seconds) and is excluded as warm-up.
Each line times several rounds and prints their median and best: on a shared machine single windows of a few
seconds spread by 30% or more, and the median of rounds is the figure to quote.

``--reference`` also times, interleaved round by round in the same process, the yardstick of the issue's target:
a plain batched torch ray caster of one sphere per image (analytic intersection, Lambert + ambient, a gradient
background, the same supersampling), and prints our median over its median. The ratio moves far less than the
img/s figures when the machine is busy: the target, 1,000 img/s where the plain caster makes about 1,200,
is a ratio of about 0.83.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

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
    rounds: int,
    adaptive: bool = True,
    reference: list[float] | None = None,
) -> list[float]:
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
    rates = []
    for _ in range(rounds):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            k = (done // batch) % 4
            world.render(factors.slice(k * batch, (k + 1) * batch))
            done += batch
        rates.append(done / (time.perf_counter() - start))
        if reference is not None:
            reference.append(measure_reference(resolution, batch, supersample, seconds))
    return rates


def plain_sphere_caster(batch: int, resolution: int, supersample: int, generator: torch.Generator) -> Tensor:
    """One sphere per image, ray-cast in one batched pass: the simplest renderer the issue compares with.

    Rays from a pinhole at the origin through an ``s*r x s*r`` grid; the sphere (random centre and radius, in front
    of the camera) is hit where ``|o + t d - c| = rho``, i.e. ``t = d.c - sqrt((d.c)^2 - |c|^2 + rho^2)``; the hit
    is shaded ``albedo * (0.2 + 0.8 max(0, n.l))``, misses get a vertical gradient; ``s x s`` samples are averaged.
    """
    n = resolution * supersample
    axis = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    d = F.normalize(torch.stack([xs, -ys, torch.ones_like(xs)], -1), dim=-1).view(1, n, n, 3)
    centre = torch.cat(
        [torch.rand(batch, 2, generator=generator) - 0.5, 2 + torch.rand(batch, 1, generator=generator)], 1
    )
    radius = 0.6 + 0.4 * torch.rand(batch, generator=generator)
    albedo = torch.rand(batch, 3, generator=generator)
    light = F.normalize(torch.randn(batch, 3, generator=generator), dim=-1)
    dc = (d * centre.view(-1, 1, 1, 3)).sum(-1)
    disc = dc**2 - (centre**2).sum(-1).view(-1, 1, 1) + radius.view(-1, 1, 1) ** 2
    hit = disc > 0
    t = dc - disc.clamp_min(0).sqrt()
    normal = F.normalize(t.unsqueeze(-1) * d - centre.view(-1, 1, 1, 3), dim=-1)
    lambert = (normal * light.view(-1, 1, 1, 3)).sum(-1).clamp_min(0)
    shaded = albedo.view(-1, 1, 1, 3) * (0.2 + 0.8 * lambert).unsqueeze(-1)
    background = (0.3 + 0.4 * (ys.view(1, n, n, 1) + 1) / 2).expand(batch, n, n, 3)
    image = torch.where(hit.unsqueeze(-1), shaded, background).permute(0, 3, 1, 2)
    image = F.avg_pool2d(image, supersample)
    return (image * 255).round().to(torch.uint8)


def measure_reference(resolution: int, batch: int, supersample: int, seconds: float) -> float:
    generator = torch.Generator().manual_seed(0)
    plain_sphere_caster(batch, resolution, supersample, generator)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        plain_sphere_caster(batch, resolution, supersample, generator)
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the 64x64 default-quality lines")
    ap.add_argument("--eager", action="store_true", help="do not torch.compile the renderer")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per line (median and best printed)")
    ap.add_argument(
        "--reference", action="store_true", help="interleave the plain one-sphere caster, print ratios"
    )
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
        reference: list[float] | None = [] if args.reference else None
        rates = measure(kind, res, batch, ss, not args.eager, args.seconds, args.rounds, adaptive, reference)
        mode = "adaptive" if adaptive else "full"
        line = f"{kind:15s} {res:4d}x{res:<4d} batch {batch:4d} supersample {ss} {mode:8s} "
        if reference:
            ratio = statistics.median(rates) / statistics.median(reference)
            line += f"ratio {ratio:5.2f} of plain sphere {statistics.median(reference):8.1f}  "
        print(f"{line}best {max(rates):8.1f}  median {statistics.median(rates):8.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
