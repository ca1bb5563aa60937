"""Part constructors: each returns the shell and hole regions of one primitive in its own local frame.

The local y axis is the part's axis (a cylinder's height, a cone's apex direction). A :class:`Part` places the
primitive in the object frame with a rotation and a centre. See :mod:`invarlab.world.geometry` for the form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .geometry import BOX_EPS

INF = 1e4
EMPTY = ((0.0, 0.0, 0.0, 0.0, 1.0), (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))  # q = 1 > 0 everywhere: no region
TEXTURES = ("plain", "stripes", "checker", "dots", "marble")


@dataclass
class Region:
    quad: tuple
    lo: tuple
    hi: tuple


@dataclass
class Part:
    shell: Region
    hole: Region | None = None
    rot: np.ndarray = field(
        default_factory=lambda: np.eye(3)
    )  # rows: the part's local axes in the object frame
    centre: tuple = (0.0, 0.0, 0.0)
    color: tuple = (0.8, 0.8, 0.8)
    color2: tuple = (0.2, 0.2, 0.2)
    texture: str = "plain"
    tex_freq: float = 6.0
    tex_phase: float = 0.0

    def bounding_points(self) -> np.ndarray:
        """Corners of the shell's slab box in the object frame (a conservative hull for normalisation)."""
        lo, hi = np.array(self.shell.lo), np.array(self.shell.hi)
        corners = np.array([[(hi if (i >> k) & 1 else lo)[k] for k in range(3)] for i in range(8)])
        return corners @ self.rot + np.array(self.centre)


def box(hx: float, hy: float, hz: float) -> Region:
    return Region((BOX_EPS, BOX_EPS, BOX_EPS, 0.0, -1.0), (-hx, -hy, -hz), (hx, hy, hz))


def ellipsoid(
    rx: float, ry: float, rz: float, y_lo: float | None = None, y_hi: float | None = None
) -> Region:
    """Ellipsoid with semi-axes (rx, ry, rz), optionally cut by planes y = y_lo / y_hi (domes, caps)."""
    lo = (-rx, -ry if y_lo is None else y_lo, -rz)
    hi = (rx, ry if y_hi is None else y_hi, rz)
    return Region((1 / rx**2, 1 / ry**2, 1 / rz**2, 0.0, -1.0), lo, hi)


def cylinder(r: float, hy: float, y_lo: float | None = None, y_hi: float | None = None) -> Region:
    return Region(
        (1 / r**2, 0.0, 1 / r**2, 0.0, -1.0),
        (-r, -hy if y_lo is None else y_lo, -r),
        (r, hy if y_hi is None else y_hi, r),
    )


def frustum(r_bottom: float, r_top: float, hy: float) -> Region:
    """Cone frustum along y from radius r_bottom at y = -hy to r_top at y = +hy.

    ``x² + z² = (rm + k y)²`` with ``rm`` the mid radius and ``k`` the slope, divided by ``rm²``.
    """
    rm = 0.5 * (r_bottom + r_top)
    k = (r_top - r_bottom) / (2 * hy)
    rmax = max(r_bottom, r_top)
    return Region(
        (1 / rm**2, -(k**2) / rm**2, 1 / rm**2, -2 * k / rm, -1.0), (-rmax, -hy, -rmax), (rmax, hy, rmax)
    )


def rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
