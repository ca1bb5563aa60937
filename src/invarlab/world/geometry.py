"""Ray intersection with the world's one primitive: a clipped quadric with an optional clipped-quadric hole.

Every part of every object is the same primitive, so a batch of heterogeneous objects is one tensor program
(no branching per part type). In part-local coordinates ``p = (x, y, z)``:

* the *shell* is ``{q(p) <= 0} ∩ {lo <= p <= hi}`` with ``q(p) = a0 x² + a1 y² + a2 z² + a3 y + a4``;
* the *hole* is a second region of the same form; the part is ``shell \\ hole``.

``q`` covers ellipsoids (a0, a1, a2 > 0), capped cylinders (a1 = 0), cone frusta (a1 < 0, a3 != 0) and boxes
(a tiny ``a0 = a1 = a2``: a huge sphere, so only the slab bounds cut). A hole makes mugs, bowls, lamp shades and
C-shaped handles. Intervals are computed with the numerically stable quadratic formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

BIG = 1e9
# a0 = a1 = a2 = BOX_EPS with a4 = -1 is a sphere of radius 1/sqrt(BOX_EPS): the slabs alone cut the box
BOX_EPS = 1e-8
_QA_EPS = 1e-12


def quadric_interval(o: Tensor, d: Tensor, quad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where the ray ``o + t d`` lies inside ``q <= 0``.

    Solves ``qa t² + qb t + qc = 0`` with ``qa = Σ a_i d_i²``, ``qb = 2 Σ a_i o_i d_i + a3 d_y``,
    ``qc = q(o)``; roots by the stable form ``r = -(qb + sign(qb) √Δ) / 2``, ``t = r / qa, qc / r``.
    Returns ``(t_lo, t_hi, inside_between, exists)``: for ``qa > 0`` the inside is ``[t_lo, t_hi]``; for
    ``qa < 0`` (cones, hyperboloids) it is the complement ``(-inf, t_lo] ∪ [t_hi, inf)``; ``exists`` is False
    where ``Δ < 0`` (then the inside is empty for ``qa > 0`` and everything for ``qa < 0``).
    """
    a0, a1, a2, a3, a4 = quad.unbind(-1)
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    qa = a0 * dx * dx + a1 * dy * dy + a2 * dz * dz
    qa = torch.where(qa.abs() < _QA_EPS, torch.full_like(qa, _QA_EPS), qa)
    qb = 2.0 * (a0 * ox * dx + a1 * oy * dy + a2 * oz * dz) + a3 * dy
    qc = a0 * ox * ox + a1 * oy * oy + a2 * oz * oz + a3 * oy + a4
    disc = qb * qb - 4.0 * qa * qc
    exists = disc >= 0
    root = disc.clamp_min(0.0).sqrt()
    r = -0.5 * (qb + torch.where(qb >= 0, root, -root))
    r = torch.where(r.abs() < 1e-30, torch.full_like(r, 1e-30), r)
    t1 = r / qa
    t2 = qc / r
    return torch.minimum(t1, t2), torch.maximum(t1, t2), qa > 0, exists


def slab_interval(o: Tensor, d: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where the ray lies inside the axis-aligned box ``lo <= p <= hi``: ``(t_near, t_far, near_axis, far_axis)``."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    ta = (lo - o) * inv
    tb = (hi - o) * inv
    t_near, near_axis = torch.minimum(ta, tb).max(-1)
    t_far, far_axis = torch.maximum(ta, tb).min(-1)
    return t_near, t_far, near_axis, far_axis


def region_interval(o: Tensor, d: Tensor, quad: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, ...]:
    """Entry and exit of the ray through ``{q <= 0} ∩ slab`` (a convex region, hence one interval).

    Returns ``(t_in, t_out, valid, in_face, out_face)`` where a face code ``0..2`` is a slab axis and ``3`` the
    quadric surface.
    """
    s_near, s_far, near_axis, far_axis = slab_interval(o, d, lo, hi)
    q_lo, q_hi, convex, exists = quadric_interval(o, d, quad)
    # qa > 0: inside is [q_lo, q_hi]. qa < 0: (-inf, q_lo] ∪ [q_hi, inf); within a convex clipped region only one
    # piece meets the slab, so take the first piece when it is non-empty, else the second.
    first_end = torch.minimum(s_far, q_lo)
    use_first = (~convex) & (s_near <= first_end)
    enter_q = torch.where(convex, q_lo, torch.where(use_first, torch.full_like(q_lo, -BIG), q_hi))
    leave_q = torch.where(convex, q_hi, torch.where(use_first, q_lo, torch.full_like(q_hi, BIG)))
    everything = (~convex) & (~exists)
    enter_q = torch.where(everything, torch.full_like(enter_q, -BIG), enter_q)
    leave_q = torch.where(everything, torch.full_like(leave_q, BIG), leave_q)
    t_in = torch.maximum(s_near, enter_q)
    t_out = torch.minimum(s_far, leave_q)
    valid = (t_in <= t_out) & (exists | ~convex)
    three = torch.full_like(near_axis, 3)
    in_face = torch.where(enter_q > s_near, three, near_axis)
    out_face = torch.where(leave_q < s_far, three, far_axis)
    return t_in, t_out, valid, in_face, out_face


def part_hits(
    o: Tensor, d: Tensor, shell: tuple[Tensor, Tensor, Tensor], hole: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """First visible surface of ``shell \\ hole`` along each ray, for rays starting outside every part.

    ``shell`` and ``hole`` are ``(quad, lo, hi)``. Returns ``(t, hit, face, on_hole)``: ``t`` (BIG where missed),
    the face code of the surface hit, and whether that surface belongs to the hole (an inner wall seen through
    the opening).
    """
    t_in, t_out, valid, in_face, _ = region_interval(o, d, *shell)
    h_in, h_out, h_valid, _, h_out_face = region_interval(o, d, *hole)
    in_hole = h_valid & (h_in <= t_in) & (t_in <= h_out)
    through = in_hole & (h_out < t_out)
    t = torch.where(in_hole, h_out, t_in)
    hit = valid & (t > 1e-4) & (~in_hole | through)
    face = torch.where(in_hole, h_out_face, in_face)
    return torch.where(hit, t, torch.full_like(t, BIG)), hit, face, in_hole


def surface_normal(p: Tensor, d: Tensor, face: Tensor, quad: Tensor) -> Tensor:
    """Unit normal at local point ``p`` facing the ray direction ``d``.

    Slab faces have normal ``e_axis``; the quadric surface has ``∇q = (2 a0 x, 2 a1 y + a3, 2 a2 z)``. Opaque
    surfaces are only ever seen from the viewer's side, so the normal is flipped to face ``-d``.
    """
    a0, a1, a2, a3, _ = quad.unbind(-1)
    x, y, z = p.unbind(-1)
    grad = torch.stack((2 * a0 * x, 2 * a1 * y + a3, 2 * a2 * z), -1)
    axis = torch.nn.functional.one_hot(face.clamp_max(2), 3).to(p.dtype)
    n = torch.where((face == 3).unsqueeze(-1), grad, axis)
    n = torch.where(((n * d).sum(-1) > 0).unsqueeze(-1), -n, n)
    return n


def _slab_near_far(o: Tensor, d: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Slab entry and exit, unrolled over the three axes (cheaper than a reduction in the fused hot loop)."""
    near, far = None, None
    for k in range(3):
        dk = d[..., k]
        inv = 1.0 / torch.where(dk.abs() < 1e-12, torch.full_like(dk, 1e-12), dk)
        ta = (lo[..., k] - o[..., k]) * inv
        tb = (hi[..., k] - o[..., k]) * inv
        n, f = torch.minimum(ta, tb), torch.maximum(ta, tb)
        near = n if near is None else torch.maximum(near, n)
        far = f if far is None else torch.minimum(far, f)
    return near, far


def _region_in_out(o: Tensor, d: Tensor, quad: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit only of :func:`region_interval` (``t_in > t_out`` when the ray misses)."""
    s_near, s_far = _slab_near_far(o, d, lo, hi)
    q_lo, q_hi, convex, exists = quadric_interval(o, d, quad)
    use_first = (~convex) & (s_near <= torch.minimum(s_far, q_lo))
    enter_q = torch.where(convex | use_first, torch.where(convex, q_lo, -BIG), q_hi)
    leave_q = torch.where(convex | use_first, q_lo.where(~convex, q_hi), torch.full_like(q_hi, BIG))
    everything = (~convex) & (~exists)
    t_in = torch.maximum(s_near, torch.where(everything, -BIG, enter_q))
    t_out = torch.minimum(s_far, torch.where(everything, BIG, leave_q))
    missed = (t_in > t_out) | (convex & ~exists)
    return t_in, torch.where(missed, -BIG, t_out)


def shell_distance(o: Tensor, d: Tensor, quad: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Distance ``t`` to the first surface of a part without a hole (BIG where the ray misses)."""
    t_in, t_out = _region_in_out(o, d, quad, lo, hi)
    return torch.where((t_in <= t_out) & (t_in > 1e-4), t_in, BIG)


def holed_distance(o: Tensor, d: Tensor, shell: tuple, hole: tuple) -> Tensor:
    """Distance to the first visible surface of ``shell \\ hole`` (the ``t`` of :func:`part_hits`)."""
    t_in, t_out = _region_in_out(o, d, *shell)
    h_in, h_out = _region_in_out(o, d, *hole)
    in_hole = (h_in <= t_in) & (t_in <= h_out)
    t = torch.where(in_hole, h_out, t_in)
    hit = (t_in <= t_out) & (t > 1e-4) & (~in_hole | (h_out < t_out))
    return torch.where(hit, t, BIG)
