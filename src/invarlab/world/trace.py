"""Ray tracing of (ray group, part) pairs: the renderer's hot loop, and the nearest hit per ray and object.

A *group* is a set of rays that share an origin pixel and a fixed pattern of offsets: an ``S x S`` tile of pixel
centres in the first pass, the ``s x s`` sub-samples of one pixel in the anti-aliasing pass. Culling (see
:mod:`invarlab.world.cull`) lists the parts each group can hit; each (group, part) pair is one column of a
``(G, N)`` tensor program (``G`` rays per group, ``N`` pairs), so work scales with what is on screen, not with
``rays x part slots``.

Ray directions are linear in the image-plane coordinates: ``d = x A + y B + C`` in part-local axes with
``A, B, C = M right, M up, M forward``; a pair stores ``A``, ``B`` and ``C + x0 A + y0 B`` for its group's origin
``(x0, y0)`` so the kernel only adds the pattern offsets.

The nearest surface per ray and object is a ``scatter_reduce(amin)`` of packed keys: for ``t > 0`` the IEEE-754
bit pattern of a float32 orders like the float, so ``key = bits(t) * 8 + slot`` carries the part slot of the
minimum along with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .catalog import P_MAX
from .compiled import compiled_or_eager
from .geometry import BIG, holed_distance, shell_distance

# rows of a part's tracing record: A, B, C (3 each), origin (3), shell quad (5), lo, hi (3 each), hole (5, 3, 3)
TRACE_ROWS = 34
PLAIN_ROWS = 23
SLOT_BITS = 3
PAD = 64  # pair counts are padded to a multiple of this, so compiled kernels see few distinct sizes


def pack_keys(t: Tensor, slot: Tensor) -> Tensor:
    """``bits(t) * 2**SLOT_BITS + slot`` as int64; ``t`` must be positive float32 (misses carry ``BIG``)."""
    return (t.view(torch.int32).to(torch.int64) << SLOT_BITS) | slot


def unpack_keys(key: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_keys`: ``(t, slot)``."""
    return (key >> SLOT_BITS).to(torch.int32).view(torch.float32), key & ((1 << SLOT_BITS) - 1)


MISS_KEY = int(pack_keys(torch.tensor([BIG], dtype=torch.float32), torch.tensor([0]))[0]) | (
    (1 << SLOT_BITS) - 1
)


def pair_keys(params: Tensor, u: Tensor, v: Tensor, slot: Tensor, holed: bool) -> Tensor:
    """Packed nearest-hit keys ``(G, N)`` of the rays ``d = u A + v B + C'`` of every pair.

    ``params`` is ``(rows, N)`` with the rows of :data:`TRACE_ROWS` (only the first :data:`PLAIN_ROWS` when
    ``holed`` is False); ``u``, ``v`` ``(G,)`` are the pattern offsets in image-plane units.
    """
    col = params.T  # (N, rows): each record is a column of the contiguous (rows, N) table
    a, b, c, o = col[:, 0:3], col[:, 3:6], col[:, 6:9], col[:, 9:12]
    d = u.view(-1, 1, 1) * a + v.view(-1, 1, 1) * b + c  # (G, N, 3)
    shell = (col[:, 12:17], col[:, 17:20], col[:, 20:23])
    if holed:
        t = holed_distance(o, d, shell, (col[:, 23:28], col[:, 28:31], col[:, 31:34]))
    else:
        t = shell_distance(o, d, *shell)
    return pack_keys(t, slot)


class PairTracer:
    """Traces pair lists with :func:`pair_keys` (compiled when ``compile`` is set)."""

    def __init__(self, compile: bool):
        self._kernel = compiled_or_eager(pair_keys, compile)

    def nearest(
        self,
        table: Tensor,
        has_hole: Tensor,
        pair_part: Tensor,
        pair_row: Tensor,
        pair_slot: Tensor,
        origin: Tensor,
        pattern: Tensor,
        n_rows: int,
    ) -> Tensor:
        """Nearest packed key ``(G, n_rows)`` per ray of the pattern and output row.

        ``table`` ``(TRACE_ROWS, parts)`` holds every part's record as a column; pair ``i`` traces part
        ``pair_part[i]`` from group origin ``origin[i]`` (image-plane ``x0, y0``) and reduces into row
        ``pair_row[i]`` (a group and object) with slot tag ``pair_slot[i]``. Rows no pair reaches hold
        :data:`MISS_KEY`.
        """
        G = pattern.shape[0]
        out = torch.full((G, n_rows + 1), MISS_KEY, dtype=torch.int64, device=table.device)
        u, v = pattern[:, 0].contiguous(), pattern[:, 1].contiguous()
        holed_pair = has_hole.index_select(0, pair_part)
        for holed in (False, True):
            sel = torch.nonzero(holed_pair == holed).squeeze(1)
            n = sel.numel()
            if n == 0:
                continue
            pad = (-n) % PAD
            if pad:  # padding pairs repeat pair 0 and reduce into the spare row n_rows
                sel = torch.cat((sel, sel.new_zeros(pad)))
            part, row = pair_part.index_select(0, sel), pair_row.index_select(0, sel)
            slot, o = pair_slot.index_select(0, sel), origin.index_select(0, sel)
            if pad:
                row[n:] = n_rows
            # gathering columns of the column table gives the kernel's (rows, N) layout without a transpose
            params = table[: TRACE_ROWS if holed else PLAIN_ROWS].index_select(1, part)
            o = o.T
            params[6:9] = params[6:9] + o[:1] * params[0:3] + o[1:] * params[3:6]
            keys = self._kernel(params, u, v, slot, holed)
            out.scatter_reduce_(1, row.view(1, -1).expand(G, -1), keys, "amin")
        return out[:, :n_rows]


def sample_pattern(n: int, sub: int, focal: float, device) -> Tensor:
    """Offsets ``(n², 2)`` in image-plane units of an ``n x n`` grid of samples spaced ``1 / sub`` pixel, from
    a group's top-left corner; row-major (``g = gy n + gx``); image-plane y points up, pixel rows down."""
    g = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / (sub * focal)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack((gx.flatten(), -gy.flatten()), -1)


def resolve_tiles(
    keys: Tensor, B: int, n_t: int, S: int, H: int, W: int, O: int, P: int, s: int, adaptive: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pass-1 keys ``(S², B T rows)`` (tile-major) -> raster ``(part, t, amodal, edge)`` per pixel centre.

    The nearest object is chosen in tile order, so only the decoded (narrower) results are transposed.
    """
    rows = keys.shape[1] // (B * n_t * n_t)
    k = keys.view(S * S, -1, rows)
    part, t, amodal = decode_keys(k, O, P)

    def raster(x: Tensor) -> Tensor:  # (S², B T, ...) -> (B, ..., H, W)
        extra = x.shape[2:]
        x = x.reshape(S, S, B, n_t, n_t, *extra)
        x = x.permute(2, *range(5, 5 + len(extra)), 3, 0, 4, 1).reshape(B, *extra, n_t * S, n_t * S)
        return x[..., :H, :W]

    part, amodal = raster(part.to(torch.int32)).long(), raster(amodal)
    return part, raster(t), amodal, edge_pixels(part, amodal, s, adaptive)


def decode_keys(keys: Tensor, O: int, P: int) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest packed keys ``(..., rows)`` over the object rows -> ``(part, t, amodal)``: the part index hit
    (-1 for none), its distance, and ``(..., O)`` whether the ray meets each object at all."""
    if keys.shape[-1] == 1:
        best, row = keys.squeeze(-1), torch.zeros((), dtype=torch.long, device=keys.device)
    else:
        best, row = keys.min(-1)
    t, slot = unpack_keys(best)
    hit = t < 0.5 * BIG
    part = torch.where(hit, torch.where(row == O, P - 1, row * P_MAX + slot), -1)
    amodal = (keys[..., :O] >> SLOT_BITS) < (MISS_KEY >> SLOT_BITS)
    return part, t, amodal


def object_of(part: Tensor, O: int) -> Tensor:
    """Object index of a part index; -1 for background and the floor."""
    return torch.where((part >= 0) & (part < O * P_MAX), part.div(P_MAX, rounding_mode="floor"), -1)


def edge_pixels(part: Tensor, amodal: Tensor, s: int, adaptive: bool) -> Tensor:
    """Pixels whose centre sample differs from a 4-neighbour's in the surface it shows (part, floor or
    background) or in which objects' silhouettes it lies (hidden silhouette edges change visible fractions)."""
    if s == 1:
        return torch.zeros_like(part, dtype=torch.bool)
    if not adaptive:
        return torch.ones_like(part, dtype=torch.bool)
    code = (part + 1) << amodal.shape[1]  # the surface and the silhouettes a sample lies in, as one integer
    for o in range(amodal.shape[1]):
        code |= amodal[:, o].long() << o
    # a pixel's 4 neighbours inside the image (a missing neighbour outside the border counts as equal)
    edge = torch.zeros_like(part, dtype=torch.bool)
    rows = code[:, 1:] != code[:, :-1]
    edge[:, 1:] |= rows
    edge[:, :-1] |= rows
    cols = code[:, :, 1:] != code[:, :, :-1]
    edge[:, :, 1:] |= cols
    edge[:, :, :-1] |= cols
    return edge


def ranks(count: Tensor) -> Tensor:
    """``[0 .. count[0]), [0 .. count[1]), ...`` concatenated."""
    total = int(count.sum())
    starts = (count.cumsum(0) - count).repeat_interleave(count)
    return torch.arange(total, device=count.device) - starts
