"""The catalogue: categories as families of composed parts, instances as deterministic draws of (seed, id).

Categories differ in shape (which parts, how they are composed); instances vary part proportions, colours and
textures. Every instance is normalised to a bounding radius of 1 around its hull centre, so a camera distance
is in object radii for every category.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .parts import (
    EMPTY,
    INF,
    TEXTURES,
    Part,
    box,
    cylinder,
    ellipsoid,
    frustum,
    rot_y,
)

P_MAX = 8  # part slots per object
Y_TO_Z = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # local y along the object's z axis
Y_TO_X = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # local y along the object's x axis


class Palette:
    """Colours and textures of one instance: a main colour, an accent, a dark and a texture choice."""

    def __init__(self, rng: np.random.Generator):
        h = rng.uniform()
        self.main = colorsys.hsv_to_rgb(h, rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95))
        self.accent = colorsys.hsv_to_rgb(
            (h + rng.uniform(0.25, 0.75)) % 1, rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95)
        )
        self.dark = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.12, 0.35))
        self.light = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.15), rng.uniform(0.8, 0.97))
        self.texture = TEXTURES[rng.integers(len(TEXTURES))]
        self.tex_freq = float(rng.uniform(5.0, 11.0))
        self.tex_phase = float(rng.uniform(0, 2 * np.pi))

    def main_part(self, shell, hole=None, rot=None, centre=(0, 0, 0)) -> Part:
        return Part(
            shell,
            hole,
            np.eye(3) if rot is None else rot,
            centre,
            self.main,
            self.accent,
            self.texture,
            self.tex_freq,
            self.tex_phase,
        )

    def part(self, shell, color, hole=None, rot=None, centre=(0, 0, 0)) -> Part:
        return Part(shell, hole, np.eye(3) if rot is None else rot, centre, color, color)


def _mug(rng, pal):
    r, h, th = rng.uniform(0.32, 0.5), rng.uniform(0.35, 0.6), rng.uniform(0.04, 0.07)
    body = pal.main_part(cylinder(r, h), cylinder(r - th, h, y_lo=-h + th, y_hi=INF))
    ro = h * rng.uniform(0.5, 0.7)
    tz = rng.uniform(0.04, 0.07)
    handle = cylinder(ro, tz, y_lo=None, y_hi=None)
    handle.lo = (0.0, -tz, -ro)  # keep the half ring on the outer side: a C-shaped handle
    hole = cylinder(ro - rng.uniform(0.06, 0.1), tz * 2)
    return [body, pal.part(handle, pal.accent, hole, Y_TO_Z, (r - th, 0, 0))]


def _table(rng, pal):
    w, d, hl, th = (
        rng.uniform(0.8, 1.2),
        rng.uniform(0.45, 0.9),
        rng.uniform(0.5, 0.9),
        rng.uniform(0.05, 0.1),
    )
    parts = [pal.main_part(box(w, th, d), centre=(0, hl + th, 0))]
    rl, m = rng.uniform(0.04, 0.08), rng.uniform(0.08, 0.15)
    round_legs = rng.uniform() < 0.5
    for sx in (-1, 1):
        for sz in (-1, 1):
            leg = cylinder(rl, hl / 2) if round_legs else box(rl, hl / 2, rl)
            parts.append(pal.part(leg, pal.dark, centre=(sx * (w - m), hl / 2, sz * (d - m))))
    return parts


def _chair(rng, pal):
    w, hs, hb, th = (
        rng.uniform(0.4, 0.55),
        rng.uniform(0.4, 0.6),
        rng.uniform(0.45, 0.8),
        rng.uniform(0.04, 0.07),
    )
    rl = rng.uniform(0.03, 0.05)
    parts = [pal.main_part(box(w, th, w), centre=(0, hs, 0))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(
                pal.part(box(rl, hs / 2, rl), pal.dark, centre=(sx * (w - rl), hs / 2, sz * (w - rl)))
            )
    parts.append(pal.main_part(box(w, hb / 2, th), centre=(0, hs + hb / 2, -w + th)))
    return parts


def _lamp(rng, pal):
    hp, rb = rng.uniform(0.8, 1.3), rng.uniform(0.25, 0.4)
    r_bot, r_top, hs, th = rng.uniform(0.35, 0.55), rng.uniform(0.12, 0.25), rng.uniform(0.2, 0.35), 0.04
    shade_hole = frustum(r_bot - th, r_top - th, hs)
    # open at both ends, but stop below the inner cone's apex so its upper nappe is not part of the hole
    rm, k = 0.5 * (r_bot + r_top) - th, (r_top - r_bot) / (2 * hs)
    shade_hole.lo, shade_hole.hi = (-INF, -INF, -INF), (INF, -rm / k * 0.999, INF)
    return [
        pal.part(cylinder(rb, 0.04), pal.dark, centre=(0, 0.04, 0)),
        pal.part(cylinder(0.035, hp / 2), pal.dark, centre=(0, hp / 2, 0)),
        pal.main_part(frustum(r_bot, r_top, hs), shade_hole, centre=(0, hp, 0)),
    ]


def _bottle(rng, pal):
    r, h, rn, hn, hsh = (
        rng.uniform(0.2, 0.35),
        rng.uniform(0.45, 0.75),
        rng.uniform(0.07, 0.12),
        rng.uniform(0.12, 0.25),
        rng.uniform(0.1, 0.25),
    )
    return [
        pal.main_part(cylinder(r, h), centre=(0, h, 0)),
        pal.main_part(frustum(r, rn, hsh / 2), centre=(0, 2 * h + hsh / 2, 0)),
        pal.part(cylinder(rn, hn / 2), pal.light, centre=(0, 2 * h + hsh + hn / 2, 0)),
        pal.part(cylinder(rn * 1.2, 0.05), pal.accent, centre=(0, 2 * h + hsh + hn + 0.05, 0)),
    ]


def _car(rng, pal):
    L, W, hb, rw = (
        rng.uniform(0.8, 1.1),
        rng.uniform(0.35, 0.5),
        rng.uniform(0.15, 0.25),
        rng.uniform(0.15, 0.22),
    )
    lc, hc = L * rng.uniform(0.4, 0.65), rng.uniform(0.13, 0.22)
    parts = [
        pal.main_part(box(L, hb, W), centre=(0, rw + hb, 0)),
        pal.part(box(lc, hc, W * 0.9), pal.light, centre=(-L * rng.uniform(0.0, 0.25), rw + 2 * hb + hc, 0)),
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(
                pal.part(cylinder(rw, 0.08), pal.dark, rot=Y_TO_Z, centre=(sx * L * 0.65, rw, sz * W))
            )
    return parts


def _snowman(rng, pal):
    r1 = rng.uniform(0.45, 0.55)
    r2, r3 = r1 * rng.uniform(0.65, 0.8), r1 * rng.uniform(0.45, 0.6)
    y1, y2 = r1, 2 * r1 + r2 * 0.8
    y3 = y2 + r2 + r3 * 0.8
    white = (0.92, 0.93, 0.95)
    hat_h = rng.uniform(0.12, 0.25)
    return [
        pal.part(ellipsoid(r1, r1, r1), white, centre=(0, y1, 0)),
        pal.part(ellipsoid(r2, r2, r2), white, centre=(0, y2, 0)),
        pal.part(ellipsoid(r3, r3, r3), white, centre=(0, y3, 0)),
        pal.part(
            frustum(r3 * 0.18, 0.005, r3 * 0.4), (0.95, 0.45, 0.1), rot=Y_TO_Z, centre=(0, y3, r3 * 1.2)
        ),
        pal.part(cylinder(r3 * 0.9, 0.025), pal.dark, centre=(0, y3 + r3 * 0.85, 0)),
        pal.main_part(cylinder(r3 * 0.6, hat_h / 2), centre=(0, y3 + r3 * 0.85 + hat_h / 2, 0)),
    ]


def _mushroom(rng, pal):
    rs, hs = rng.uniform(0.1, 0.2), rng.uniform(0.3, 0.6)
    rc, hc = rng.uniform(0.45, 0.7), rng.uniform(0.25, 0.5)
    return [
        pal.part(cylinder(rs, hs / 2), pal.light, centre=(0, hs / 2, 0)),
        pal.main_part(ellipsoid(rc, hc, rc, y_lo=0.0), centre=(0, hs * 0.9, 0)),
    ]


def _tree(rng, pal):
    rt, ht = rng.uniform(0.06, 0.12), rng.uniform(0.2, 0.4)
    green = colorsys.hsv_to_rgb(rng.uniform(0.22, 0.42), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.7))
    parts = [pal.part(cylinder(rt, ht / 2), (0.4, 0.25, 0.12), centre=(0, ht / 2, 0))]
    n, y, r = int(rng.integers(2, 4)), ht, rng.uniform(0.45, 0.6)
    for _ in range(n):
        hh = rng.uniform(0.22, 0.32)
        part = Part(
            frustum(r, 0.01, hh),
            None,
            np.eye(3),
            (0, y + hh, 0),
            green,
            pal.accent,
            pal.texture,
            pal.tex_freq,
            pal.tex_phase,
        )
        parts.append(part)
        y, r = y + hh * 1.1, r * 0.75
    return parts


def _rocket(rng, pal):
    r, h, hn = rng.uniform(0.15, 0.25), rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.4)
    fin_h, fin_w = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.25)
    y0 = 0.15
    parts = [
        pal.main_part(cylinder(r, h), centre=(0, y0 + h, 0)),
        pal.part(frustum(r, 0.01, hn / 2), pal.accent, centre=(0, y0 + 2 * h + hn / 2, 0)),
        pal.part(frustum(r * 0.6, r * 0.85, 0.075), pal.dark, centre=(0, 0.075, 0)),
    ]
    for k in range(3):
        rot = rot_y(120 * k + 30)
        centre = rot.T @ np.array([r + fin_w / 2, y0 + fin_h, 0])
        parts.append(pal.part(box(fin_w / 2, fin_h, 0.02), pal.accent, rot=rot, centre=tuple(centre)))
    return parts


def _dumbbell(rng, pal):
    L, rb = rng.uniform(0.5, 0.8), rng.uniform(0.04, 0.07)
    rw, tw = rng.uniform(0.2, 0.35), rng.uniform(0.06, 0.15)
    parts = [pal.part(cylinder(rb, L), pal.light, rot=Y_TO_X, centre=(0, rw, 0))]
    spheres = rng.uniform() < 0.4
    for sx in (-1, 1):
        shape = ellipsoid(rw, rw, rw) if spheres else cylinder(rw, tw)
        parts.append(pal.main_part(shape, rot=Y_TO_X, centre=(sx * (L - tw), rw, 0)))
    return parts


def _bowl(rng, pal):
    R, k, th = rng.uniform(0.6, 0.8), rng.uniform(0.45, 0.8), rng.uniform(0.04, 0.07)
    ry = R * k
    hole = ellipsoid(R - th, ry - th, R - th)
    hole.hi = (R, INF, R)
    return [
        pal.main_part(ellipsoid(R, ry, R, y_hi=0.0), hole, centre=(0, ry + 0.05, 0)),
        pal.part(cylinder(R * 0.4, 0.04), pal.accent, centre=(0, 0.04 + ry * 0.0, 0)),
    ]


def _hut(rng, pal):
    r, h, hr = rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.55)
    return [
        pal.main_part(cylinder(r, h / 2), centre=(0, h / 2, 0)),
        pal.part(frustum(r * rng.uniform(1.15, 1.35), 0.01, hr / 2), pal.accent, centre=(0, h + hr / 2, 0)),
        pal.part(box(r * 0.25, h * 0.33, 0.05), pal.dark, centre=(0, h * 0.33, r - 0.01)),
    ]


def _umbrella(rng, pal):
    R, k, hp = rng.uniform(0.6, 0.85), rng.uniform(0.3, 0.5), rng.uniform(0.7, 1.0)
    canopy_hole = ellipsoid(R - 0.03, R * k - 0.03, R - 0.03)
    canopy_hole.lo = (-R, -INF, -R)
    rh = rng.uniform(0.08, 0.13)
    hook = cylinder(rh, 0.025)
    hook.hi = (rh, 0.025, 0.0)  # half ring below the shaft: a J handle
    hook_hole = cylinder(rh - 0.04, 0.1)
    return [
        pal.main_part(ellipsoid(R, R * k, R, y_lo=0.0), canopy_hole, centre=(0, hp, 0)),
        pal.part(cylinder(0.025, hp / 2 + 0.05), pal.dark, centre=(0, hp / 2 + 0.05, 0)),
        pal.part(hook, pal.dark, hook_hole, Y_TO_Z, centre=(rh - 0.0, 0.05, 0)),
    ]


CATEGORIES: dict[str, Callable] = {
    "mug": _mug,
    "table": _table,
    "chair": _chair,
    "lamp": _lamp,
    "bottle": _bottle,
    "car": _car,
    "snowman": _snowman,
    "mushroom": _mushroom,
    "tree": _tree,
    "rocket": _rocket,
    "dumbbell": _dumbbell,
    "bowl": _bowl,
    "hut": _hut,
    "umbrella": _umbrella,
}
CATEGORY_NAMES = tuple(CATEGORIES)
CATEGORY_GROUPS = {
    "furniture": ("table", "chair", "lamp"),
    "kitchen": ("mug", "bottle", "bowl"),
    "outdoor": ("tree", "mushroom", "snowman", "hut", "umbrella"),
    "vehicles": ("car", "rocket"),
    "tools": ("dumbbell",),
}


def instance_seed(seed: int, category: int, instance: int) -> int:
    """A seed that depends only on (world seed, category id, instance id), stable across platforms."""
    key = f"invarlab-world:{seed}:{category}:{instance}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def build_instance(seed: int, category: int, instance: int) -> list[Part]:
    """The parts of one instance in its object frame, normalised to bounding radius 1 about the hull centre."""
    rng = np.random.default_rng(instance_seed(seed, category, instance))
    parts = CATEGORIES[CATEGORY_NAMES[category]](rng, Palette(rng))
    parts = sorted(parts, key=lambda p: p.hole is None)  # stable: holed parts first (fixes the slot order)
    pts = np.concatenate([p.bounding_points() for p in parts])
    centre = 0.5 * (pts.min(0) + pts.max(0))
    scale = 1.0 / np.linalg.norm(pts - centre, axis=1).max()
    return [_scaled(p, centre, scale) for p in parts]


def _scaled(p: Part, centre: np.ndarray, s: float) -> Part:
    def reg(r):
        a0, a1, a2, a3, a4 = r.quad
        # q(p/s) scaled: coefficients of x², y², z² divide by s², the linear one by s
        return type(r)(
            (a0 / s**2, a1 / s**2, a2 / s**2, a3 / s, a4),
            tuple(np.array(r.lo) * s),
            tuple(np.array(r.hi) * s),
        )

    c = (np.array(p.centre) - centre) * s
    return Part(
        reg(p.shell),
        None if p.hole is None else reg(p.hole),
        p.rot,
        tuple(c),
        p.color,
        p.color2,
        p.texture,
        p.tex_freq / s,
        p.tex_phase,
    )


@dataclass
class Catalog:
    """Every instance of every category packed as tensors ``(n_cat, n_inst, P_MAX, ...)``."""

    seed: int
    instances_per_category: int
    quad: torch.Tensor  # (C, I, P, 5)
    lo: torch.Tensor  # (C, I, P, 3)
    hi: torch.Tensor
    hquad: torch.Tensor
    hlo: torch.Tensor
    hhi: torch.Tensor
    rot: torch.Tensor  # (C, I, P, 3, 3) rows: local axes in the object frame
    centre: torch.Tensor  # (C, I, P, 3)
    color: torch.Tensor  # (C, I, P, 3)
    color2: torch.Tensor
    texture: torch.Tensor  # (C, I, P, 3): kind, frequency, phase
    valid: torch.Tensor  # (C, I, P) bool
    bottom: torch.Tensor  # (C, I) lowest y of the normalised instance (to stand it on a floor)

    @property
    def names(self) -> tuple[str, ...]:
        return CATEGORY_NAMES

    def to(self, device) -> Catalog:
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Catalog(**fields)


_CACHE: dict[tuple[int, int], Catalog] = {}


def build_catalog(seed: int = 0, instances_per_category: int = 50) -> Catalog:
    """Build (once per process) the packed catalogue for a world seed."""
    key = (seed, instances_per_category)
    if key in _CACHE:
        return _CACHE[key]
    C, I = len(CATEGORY_NAMES), instances_per_category
    arr = {
        "quad": np.zeros((C, I, P_MAX, 5)),
        "lo": np.zeros((C, I, P_MAX, 3)),
        "hi": np.zeros((C, I, P_MAX, 3)),
        "hquad": np.zeros((C, I, P_MAX, 5)),
        "hlo": np.zeros((C, I, P_MAX, 3)),
        "hhi": np.zeros((C, I, P_MAX, 3)),
        "rot": np.tile(np.eye(3), (C, I, P_MAX, 1, 1)),
        "centre": np.zeros((C, I, P_MAX, 3)),
        "color": np.zeros((C, I, P_MAX, 3)),
        "color2": np.zeros((C, I, P_MAX, 3)),
        "texture": np.zeros((C, I, P_MAX, 3)),
        "valid": np.zeros((C, I, P_MAX), bool),
        "bottom": np.zeros((C, I)),
    }
    for c in range(C):
        for i in range(I):
            parts = build_instance(seed, c, i)
            if len(parts) > P_MAX:
                raise AssertionError(f"category {CATEGORY_NAMES[c]} has {len(parts)} parts > {P_MAX}")
            arr["bottom"][c, i] = min(p.bounding_points()[:, 1].min() for p in parts)
            for k in range(P_MAX):
                if k < len(parts):
                    p = parts[k]
                    hole = (
                        p.hole.__dict__
                        if p.hole is not None
                        else dict(zip(("quad", "lo", "hi"), EMPTY, strict=False))
                    )
                    values = (p.shell.quad, p.shell.lo, p.shell.hi, hole["quad"], hole["lo"], hole["hi"])
                    tex = (TEXTURES.index(p.texture), p.tex_freq, p.tex_phase)
                    arr["rot"][c, i, k], arr["centre"][c, i, k] = p.rot, p.centre
                    arr["color"][c, i, k], arr["color2"][c, i, k], arr["texture"][c, i, k] = (
                        p.color,
                        p.color2,
                        tex,
                    )
                    arr["valid"][c, i, k] = True
                else:
                    values = EMPTY + EMPTY
                for name, v in zip(("quad", "lo", "hi", "hquad", "hlo", "hhi"), values, strict=False):
                    arr[name][c, i, k] = v
    tensors = {
        k: torch.as_tensor(v, dtype=torch.bool if v.dtype == bool else torch.float32) for k, v in arr.items()
    }
    cat = Catalog(seed=seed, instances_per_category=I, **tensors)
    _CACHE[key] = cat
    return cat
