"""Procedural textures in object coordinates, lighting and colour temperature: pure tensor functions."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .geometry import part_hits, surface_normal

TEXTURE_KINDS = ("plain", "stripes", "checker", "dots", "marble", "tiles")
# mean mixing weight of each kind over a period: what a texture fades to when it is too fine for the pixels
# (dots: the volume fraction of a ball of radius 0.3 in a unit cell, 4/3 π 0.3³)
TEXTURE_MEANS = (0.0, 0.5, 0.5, 4 / 3 * math.pi * 0.3**3, 0.5, 0.5)


def band_limit(mix: Tensor, kind: Tensor, cycles_per_pixel: Tensor) -> Tensor:
    """Fade a procedural texture to its mean where it is finer than the pixel grid can show (frequency clamping).

    ``m' = μ + w (m - μ)`` with ``w = clamp(2 - 4 c, 0, 1)`` for ``c`` texture cycles per pixel: full contrast up
    to a quarter cycle per pixel, none at the Nyquist limit (half a cycle). Without it one sample per pixel
    aliases distant or grazing textures (a floor near the horizon) into noise.
    """
    mean = torch.zeros_like(mix)
    for k, value in enumerate(TEXTURE_MEANS):
        mean = torch.where(kind == k, value, mean)
    w = (2.0 - 4.0 * cycles_per_pixel).clamp(0, 1)
    return mean + w * (mix - mean)


def texture_mix(p: Tensor, kind: Tensor, freq: Tensor, phase: Tensor) -> Tensor:
    """Mixing weight ``m ∈ [0, 1]`` between a part's two colours at part-local point ``p`` (..., 3).

    plain: 0; stripes: ``sin(f y + φ)`` bands along the part axis; checker: sign of ``sin(f x + φ) sin(f y)
    sin(f z)``; dots: a lattice of balls of radius 0.3 / f; marble: ``sin(f (x + 0.4 sin(1.7 f y + φ) + 0.3 sin(2.3 f
    z)))``; tiles (floors): ``sin(f x + φ) sin(f z)``. Edges are soft ramps rather than steps so supersampling can resolve them.
    """
    x, y, z = (p * freq.unsqueeze(-1)).unbind(-1)
    stripes = (0.5 + 2.0 * torch.sin(y + phase)).clamp(0, 1)
    checker = (0.5 + 4.0 * torch.sin(x + phase) * torch.sin(y) * torch.sin(z)).clamp(0, 1)
    cell = torch.stack((x, y, z), -1) / (2 * math.pi)
    dist = (cell - cell.floor() - 0.5).norm(dim=-1)
    dots = ((0.3 - dist) * 10.0).clamp(0, 1)
    marble = 0.5 + 0.5 * torch.sin(x + 0.4 * torch.sin(1.7 * y + phase) + 0.3 * torch.sin(2.3 * z))
    tiles = (0.5 + 4.0 * torch.sin(x + phase) * torch.sin(z)).clamp(0, 1)
    m = torch.zeros_like(x)
    for k, value in enumerate((stripes, checker, dots, marble, tiles), start=1):
        m = torch.where(kind == k, value, m)
    return m


def blinn_phong(
    albedo: Tensor,
    normal: Tensor,
    view: Tensor,
    light_dir: Tensor,
    light_rgb: Tensor,
    ambient: float,
    diffuse: float,
    specular: float,
    shininess: float,
) -> Tensor:
    """``c = albedo ⊙ L_rgb (k_a + k_d max(0, n·l)) + k_s L_rgb max(0, n·h)^s [n·l > 0]``, ``h = (l + v)/|l + v|``.

    All direction vectors are unit length and point away from the surface (towards light and viewer).
    """
    ndl = (normal * light_dir).sum(-1, keepdim=True)
    lit = albedo * light_rgb * (ambient + diffuse * ndl.clamp_min(0))
    if specular > 0:
        half = torch.nn.functional.normalize(light_dir + view, dim=-1)
        ndh = (normal * half).sum(-1, keepdim=True).clamp_min(0)
        lit = lit + specular * light_rgb * ndh.pow(shininess) * (ndl > 0)
    return lit


def direction(azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """Unit vector ``(cos e sin a, sin e, cos e cos a)``: azimuth about the vertical y axis from +z, elevation up."""
    a, e = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return torch.stack((e.cos() * a.sin(), e.sin(), e.cos() * a.cos()), -1)


_WAVELENGTHS_NM = (610.0, 550.0, 465.0)  # dominant wavelengths of the sRGB red, green and blue primaries


def temperature_rgb(kelvin: Tensor) -> Tensor:
    """RGB of a black body at ``kelvin``, from Planck's law at the three primaries' wavelengths.

    ``B(λ, T) ∝ λ⁻⁵ / (exp(hc / λ k T) - 1)``, divided by the same at 6500 K (so D65-like light is white), then
    by the largest channel (so the brightest channel is 1).
    """
    hc_over_k = 1.4387769e-2  # metre kelvin
    lam = torch.tensor(_WAVELENGTHS_NM, dtype=torch.float64, device=kelvin.device) * 1e-9
    t = kelvin.to(torch.float64).unsqueeze(-1)
    planck = lam.pow(-5) / torch.expm1(hc_over_k / (lam * t))
    white = lam.pow(-5) / torch.expm1(hc_over_k / (lam * 6500.0))
    rgb = planck / white
    return (rgb / rgb.amax(-1, keepdim=True)).to(torch.float32)


# rows of a hit's shading record: local map M (9), camera origin (3), shell (5, 3, 3), hole (5, 3, 3),
# texture kind / frequency / phase (3), colour (3), second colour (3), camera right, up, forward (9), light
# direction (3) and RGB (3)
SHADE_ROWS = (9, 3, 5, 3, 3, 5, 3, 3, 3, 3, 3, 9, 3, 3)


def shade_hits(
    rec: Tensor,
    xy: Tensor,
    t: Tensor,
    pixel: float,
    ambient: float,
    diffuse: float,
    specular: float,
    shininess: float,
) -> Tensor:
    """Colour ``(M, 3)`` of ``M`` ray hits.

    ``rec`` ``(sum(SHADE_ROWS), M)`` holds each hit's record as a column (the hit part and its image's camera
    and light), ``xy`` ``(2, M)`` the ray's image-plane point and ``t`` ``(M,)`` the hit distance along the ray
    ``x right + y up + forward``; ``pixel`` is the pixel pitch in image-plane units (``1 / focal``). Records
    are columns so a compiled kernel reads every field contiguously.

    The hit part is intersected again (cheap: one part per ray) for the face it was hit on; the normal is
    mapped back to world axes by ``M^T``; texture and Blinn-Phong lighting as in :func:`texture_mix` and
    :func:`blinn_phong`.
    """
    fields = rec.T.split(SHADE_ROWS, -1)
    m, o, quad, lo, hi, hquad, hlo, hhi, tex, color, color2, axes, light_dir, light_rgb = fields
    m, axes = m.reshape(-1, 3, 3), axes.reshape(-1, 3, 3)
    dirs = xy[0].unsqueeze(-1) * axes[:, 0] + xy[1].unsqueeze(-1) * axes[:, 1] + axes[:, 2]
    d = (m * dirs.unsqueeze(1)).sum(-1)
    _, _, face, on_hole = part_hits(o, d, (quad, lo, hi), (hquad, hlo, hhi))
    p = o + t.unsqueeze(-1) * d
    n_local = surface_normal(p, d, face, torch.where(on_hole.unsqueeze(-1), hquad, quad))
    normal = torch.nn.functional.normalize((m * n_local.unsqueeze(-1)).sum(-2), dim=-1)  # M^T n
    view = -torch.nn.functional.normalize(dirs, dim=-1)
    # a pixel's footprint on the surface, in part units: the ray spacing t |d_local| pixel, stretched by 1/cos
    # at grazing angles; a texture of angular frequency f repeats every 2π / f part units
    kind = tex[..., 0].round()
    slant = (normal * view).sum(-1).abs().clamp_min(0.1)
    footprint = t * d.norm(dim=-1) * pixel / slant
    mix = texture_mix(p, kind, tex[..., 1], tex[..., 2])
    mix = band_limit(mix, kind, footprint * tex[..., 1] / (2 * math.pi)).unsqueeze(-1)
    albedo = color * (1 - mix) + color2 * mix
    return blinn_phong(albedo, normal, view, light_dir, light_rgb, ambient, diffuse, specular, shininess)
