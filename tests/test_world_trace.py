"""The renderer's fast paths against slower references: culling, packed keys, adaptive supersampling."""

from __future__ import annotations

import math

import torch

from invarlab.world import CATEGORY_NAMES, Factors, World
from invarlab.world.config import DatasetSpec, WorldConfig
from invarlab.world.cull import tile_cones, tile_overlaps
from invarlab.world.datasets import plan
from invarlab.world.trace import MISS_KEY, pack_keys, unpack_keys


def test_packed_keys_order_like_distances_and_round_trip():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(10_000, generator=g) * 50 + 1e-3
    slot = torch.randint(0, 8, (10_000,), generator=g)
    keys = pack_keys(t, slot)
    back_t, back_slot = unpack_keys(keys)
    assert torch.equal(back_t, t) and torch.equal(back_slot, slot)
    order = torch.argsort(keys)
    assert bool((t[order][1:] >= t[order][:-1]).all())  # sorting keys sorts distances
    assert int(keys.max()) < MISS_KEY


def _ray_hits_sphere(dirs: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Closed form: the ray ``t d`` (t > 0) meets the sphere iff the distance from its line to the centre is at
    most the radius and the sphere is not behind the camera."""
    d = torch.nn.functional.normalize(dirs, dim=-1)
    along = (centre * d).sum(-1)
    closest = (centre - along.unsqueeze(-1) * d).norm(dim=-1)
    return (closest <= radius) & ((along > 0) | (centre.norm(dim=-1) <= radius))


def test_tile_culling_never_drops_a_sphere_a_ray_of_the_tile_meets():
    g = torch.Generator().manual_seed(1)
    B, n_t, S, P = 4, 4, 8, 64
    focal = 40.0
    edges = torch.arange(n_t * S + 1, dtype=torch.float32)
    shift = (torch.rand(B, 2, generator=g) - 0.5) * 0.3
    x_edges = (edges - 16 - shift[:, :1] * 32) / focal
    y_edges = -(edges - 16 - shift[:, 1:] * 32) / focal
    cam_rot = torch.linalg.qr(torch.randn(B, 3, 3, generator=g)).Q
    cam_rot = cam_rot * torch.linalg.det(cam_rot).view(B, 1, 1)  # proper rotations
    centre = torch.randn(B, P, 3, generator=g) * 1.5 + cam_rot[:, 2:3] * 3.0
    radius = torch.rand(B, P, generator=g) * 0.4 + 0.02
    ray, half = tile_cones(x_edges, y_edges, cam_rot, S, n_t)
    overlap = tile_overlaps(centre, radius, ray, half)  # (B, T, P)
    # every sample of a 4x4 sub-grid of each tile, pixel corners included
    sub = torch.linspace(0, S, 9)
    for b in range(B):
        for ty in range(n_t):
            for tx in range(n_t):
                xs = x_edges[b, tx * S] + (x_edges[b, tx * S + 1] - x_edges[b, tx * S]) * sub
                ys = y_edges[b, ty * S] + (y_edges[b, ty * S + 1] - y_edges[b, ty * S]) * sub
                yy, xx = torch.meshgrid(ys, xs, indexing="ij")
                cam = torch.stack((xx.flatten(), yy.flatten(), torch.ones(xx.numel())), -1)
                dirs = cam @ cam_rot[b]
                hit = _ray_hits_sphere(dirs.unsqueeze(1), centre[b].unsqueeze(0), radius[b].unsqueeze(0))
                met = hit.any(0)
                assert bool((overlap[b, ty * n_t + tx] | ~met).all())
    assert 0.02 < overlap.float().mean() < 0.6  # culling does cull


def test_adaptive_supersampling_matches_full_supersampling():
    cfg = WorldConfig(instances_per_category=6)
    cfg.render.resolution, cfg.render.compile = 48, False
    factors, _ = plan(DatasetSpec(kind="scene_centric", num_images=8), cfg)
    full_cfg = WorldConfig(instances_per_category=6)
    full_cfg.render.resolution, full_cfg.render.compile, full_cfg.render.adaptive = 48, False, False
    a, b = World(cfg).render(factors), World(full_cfg).render(factors)
    diff = (a.images.float() - b.images.float()).abs()
    # only interior pixels of a surface (same part at the centre and all 4 neighbours) are shaded once
    assert float(diff.mean()) < 1.0 and float((diff > 24).float().mean()) < 0.01
    assert float((a.instance_mask != b.instance_mask).float().mean()) < 0.005
    assert torch.allclose(a.visible_fraction, b.visible_fraction, atol=0.005)


def test_supersampling_smooths_edges_but_keeps_interiors():
    f = Factors.default(len(CATEGORY_NAMES))
    f.category[:, 0] = torch.arange(len(CATEGORY_NAMES))
    f.distance[:] = 3.0
    outs = {}
    for s in (1, 2):
        cfg = WorldConfig(instances_per_category=6)
        cfg.render.resolution, cfg.render.compile, cfg.render.supersample = 32, False, s
        outs[s] = World(cfg).render(f)
    # with 1 sample per pixel every pixel is one surface's colour; supersampling blends at silhouettes only
    interior = (outs[1].instance_mask == outs[2].instance_mask) & (outs[1].instance_mask > 0)
    eroded = interior.clone()
    eroded[:, 1:-1, 1:-1] &= interior[:, :-2, 1:-1] & interior[:, 2:, 1:-1]
    eroded[:, 1:-1, 1:-1] &= interior[:, 1:-1, :-2] & interior[:, 1:-1, 2:]
    diff = (outs[1].images.float() - outs[2].images.float()).abs().amax(1)
    assert float(diff[eroded].median()) == 0.0
    assert not math.isclose(float(diff.sum()), 0.0)


def test_factor_records_reproduce_the_images():
    cfg = WorldConfig(instances_per_category=6)
    cfg.render.resolution, cfg.render.compile = 32, False
    factors, _ = plan(DatasetSpec(kind="scene_centric", num_images=4), cfg)
    world = World(cfg)
    first = world.render(factors)
    cols = first.factors.records()
    assert all(v.ndim == 1 and len(v) == 4 for v in cols.values())  # a flat table
    back = Factors.from_records(cols, objects=factors.category.shape[1])
    for name in ("category", "position", "light_rgb", "background_colors", "floor"):
        assert torch.equal(getattr(back, name), getattr(factors, name)), name
    assert torch.equal(world.render(back).images, first.images)
