"""Video clips: smooth camera, object and light trajectories; objects move and occlude each other.

A clip is a scene-centric draw whose factors are interpolated over ``T`` frames: each object slides along a
straight line on the floor and turns at a constant rate, the camera orbits at a constant angular speed and its
elevation drifts sinusoidally, the light turns slowly. Tracks keep their id (``clip * O + slot``) for the whole
clip, so masks and boxes come with persistent track ids.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import DatasetSpec, WorldConfig
from .factors import Factors
from .sampling import scene_centric, uniform


def clips(spec: DatasetSpec, world: WorldConfig, gen: torch.Generator) -> tuple[Factors, dict[str, Tensor]]:
    """Factors for ``num_images // clip_length`` whole clips, with clip, frame and track columns."""
    T = spec.clip_length
    n_clips = max(1, spec.num_images // T)
    start = scene_centric(n_clips, spec, world, gen)
    O = start.category.shape[1]
    f = start.index(torch.arange(n_clips).repeat_interleave(T))
    s = (torch.arange(T, dtype=torch.float32) / max(T - 1, 1)).repeat(n_clips)  # clip time in [0, 1]
    # per-clip motion parameters, expanded to frames
    speed = uniform(gen, n_clips * O, 0.6, 1.6).view(n_clips, O)
    heading = uniform(gen, n_clips * O, 0, 2 * math.pi).view(n_clips, O)
    spin = uniform(gen, n_clips * O, -90, 90).view(n_clips, O)
    orbit = uniform(gen, n_clips, -60, 60)
    bob = uniform(gen, n_clips, 0, 2 * math.pi)
    light_turn = uniform(gen, n_clips, -45, 45)
    rep = torch.arange(n_clips).repeat_interleave(T)
    step = s.view(-1, 1) * speed[rep]
    f.position = f.position.clone()
    f.position[..., 0] += step * torch.cos(heading[rep])
    f.position[..., 2] += step * torch.sin(heading[rep])
    f.yaw = f.yaw + s.view(-1, 1) * spin[rep]
    f.azimuth = f.azimuth + s * orbit[rep]
    f.elevation = f.elevation + 4.0 * torch.sin(2 * math.pi * s + bob[rep])
    f.light_azimuth = f.light_azimuth + s * light_turn[rep]
    track = rep.view(-1, 1) * O + torch.arange(O).view(1, -1)
    track = torch.where(f.category >= 0, track, -1)
    meta = {"clip": rep, "frame": torch.arange(T).repeat(n_clips)}
    meta.update({f"track_{o}": track[:, o] for o in range(O)})
    return f, meta
