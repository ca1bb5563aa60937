"""Screen-space culling: which parts can a tile of rays hit, from bounding spheres and cone angles.

Tracing every ray against every part slot wastes most of the work: an object-centric image leaves more than
half its pixels to the background and each part covers a small part of the object. The renderer therefore
splits the image into square tiles and traces each tile only against the parts whose bounding sphere meets the
tile's cone of rays. The test is conservative (it never drops a part that a ray of the tile hits):

* a part's shell lies in its slab ``lo <= p <= hi``, so it lies in the sphere of centre ``(lo + hi) / 2`` and
  radius ``|hi - lo| / 2`` (in part units; world radius ``s r`` for an object of scale ``s``);
* a sphere seen from the camera at distance ``D`` subtends the half-angle ``α = asin(r / D)``;
* a tile's rays lie in the cone around its centre ray ``u`` whose half-angle ``δ`` is the largest angle
  between ``u`` and the rays through the tile's corners;
* a ray of the tile can meet the sphere only if ``∠(u, c) <= α + δ`` (triangle inequality on the sphere of
  directions), or if the camera is inside the sphere.
"""

from __future__ import annotations

import torch
from torch import Tensor


def part_spheres(o_local: Tensor, m: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Bounding spheres of parts relative to the camera, in world axes: ``(centre (B, P, 3), radius (B, P))``.

    A part maps world offsets from the camera to local points by ``p = o + M (x - cam)`` with
    ``M = R_p R_o^T / s``, so ``x - cam = M^{-1} (p - o) = s² M^T (p - o)`` and ``s² = 1 / |M e_1|²``.
    """
    mid = 0.5 * (lo + hi)
    radius_local = 0.5 * (hi - lo).clamp_min(0).norm(dim=-1)
    s2 = 1.0 / m[..., 0, :].pow(2).sum(-1).clamp_min(1e-20)
    centre = s2.unsqueeze(-1) * torch.einsum("bpji,bpj->bpi", m, mid - o_local)
    return centre, s2.sqrt() * radius_local


def tile_cones(
    x_edges: Tensor, y_edges: Tensor, cam_rot: Tensor, tile: int, n_tiles: int
) -> tuple[Tensor, Tensor]:
    """Centre rays ``(B, T, 3)`` (unit, world axes) and half-angles ``(B, T)`` of the tiles of every image.

    ``x_edges`` / ``y_edges`` ``(B, n_tiles * tile + 1)`` are image-plane coordinates of the pixel edges (the
    camera looks along ``+z`` of ``cam_rot``'s rows right, up, forward); tile ``(i, j)`` spans pixel rows
    ``i * tile .. (i + 1) * tile`` and columns ``j * tile .. (j + 1) * tile``.
    """
    B = cam_rot.shape[0]
    xs, ys = x_edges[:, ::tile], y_edges[:, ::tile]  # (B, n_tiles + 1) tile edges
    corner_x = torch.stack((xs[:, :-1], xs[:, 1:]), -1)  # (B, n, 2)
    corner_y = torch.stack((ys[:, :-1], ys[:, 1:]), -1)
    cx = corner_x.view(B, 1, n_tiles, 1, 2).expand(B, n_tiles, n_tiles, 2, 2)
    cy = corner_y.view(B, n_tiles, 1, 2, 1).expand(B, n_tiles, n_tiles, 2, 2)
    corners = torch.stack((cx, cy, torch.ones_like(cx)), -1)  # (B, ty, tx, 2, 2, 3) camera axes
    corners = torch.nn.functional.normalize(corners, dim=-1).flatten(1, 2).flatten(2, 3)  # (B, T, 4, 3)
    centre = torch.nn.functional.normalize(corners.sum(2), dim=-1)  # (B, T, 3)
    half = torch.acos((corners * centre.unsqueeze(2)).sum(-1).clamp(-1, 1)).amax(-1)
    return centre @ cam_rot, half  # camera axes -> world axes: rows of cam_rot are the camera axes


def tile_overlaps(centre: Tensor, radius: Tensor, ray: Tensor, half: Tensor) -> Tensor:
    """``(B, T, P)``: can a ray of tile ``t`` meet part ``p``'s sphere (``centre`` relative to the camera)?"""
    dist = centre.norm(dim=-1).clamp_min(1e-12)  # (B, P)
    alpha = torch.asin((radius / dist).clamp(max=1.0))
    cos = torch.einsum("btk,bpk->btp", ray, centre) / dist.unsqueeze(1)
    angle = torch.acos(cos.clamp(-1, 1))
    inside = (dist <= radius).unsqueeze(1)
    return (angle <= alpha.unsqueeze(1) + half.unsqueeze(-1) + 1e-4) | inside
