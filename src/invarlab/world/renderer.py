"""The batched renderer: ray casting of composed parts, Blinn-Phong shading, occluders, adaptive supersampling.

A batch is rendered in passes of tensor programs (``torch.compile``d where available, the same code eagerly
otherwise):

1. *cull* (:mod:`.cull`): list the (image, 8x8 tile, part) triples whose bounding sphere meets the tile's rays;
2. *trace* (:mod:`.trace`): intersect the pixel centres of each tile with its parts only, keep the nearest
   hit per pixel and object;
3. *refine*: pixels whose centre sees a different surface than a neighbour's are traced again at ``s x s``
   sub-samples against their tile's parts (``render.adaptive=false`` refines every pixel);
4. *shade* (:func:`.shading.shade_hits`): every hit sample once, background elsewhere;
5. *composite* (:mod:`.composite`): occluder plate at sub-sample level, averages and majority-vote masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .background import make_background, photo_crops_fn, procedural_background
from .catalog import P_MAX, Catalog, build_catalog
from .compiled import compiled_or_eager
from .composite import Composite, Samples, composite, images_and_masks
from .config import RenderConfig, WorldConfig
from .cull import part_spheres, tile_cones, tile_overlaps
from .factors import Factors
from .geometry import BOX_EPS
from .parts import EMPTY
from .shading import blinn_phong, direction, shade_hits
from .trace import (
    PAD,
    PairTracer,
    decode_keys,
    object_of,
    ranks,
    resolve_tiles,
    sample_pattern,
)

EMPTY_QUAD = EMPTY[0]  # q = 1 > 0 everywhere: a region with no inside
FLOOR_TEXTURE = 5  # tiles
TILE = 8  # pixels per side of a culling tile
SHADE_SLICE = 1 << 15  # rays shaded per kernel call


@dataclass
class RenderOutput:
    """What one render call returns; masks use 0 for background, ``o + 1`` for object ``o``, 255 for occluders."""

    images: Tensor  # (B, 3, H, W) uint8
    instance_mask: Tensor  # (B, H, W) uint8
    category_mask: Tensor  # (B, H, W) uint8: 0 background / occluder, c + 1 for category c
    boxes: Tensor  # (B, O, 4) float x0, y0, x1, y1 of the visible pixels; -1 where nothing is visible
    amodal_boxes: Tensor  # (B, O, 4) the same for the unoccluded silhouette
    visible_fraction: Tensor  # (B, O) visible / unoccluded silhouette area (sample level); 0 where absent
    occluded_fraction: Tensor  # (B,) fraction of object 0's silhouette covered by the occluder (sample level)
    depth: Tensor  # (B, H, W) float camera distance at pixel centres (objects and floor); inf elsewhere
    factors: Factors


def look_at(cam_pos: Tensor, target: Tensor) -> Tensor:
    """Camera rotation ``(B, 3, 3)`` with rows right, up, forward for a camera at ``cam_pos`` facing ``target``."""
    fwd = F.normalize(target - cam_pos, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], device=cam_pos.device).expand_as(fwd)
    right = F.normalize(torch.linalg.cross(fwd, up), dim=-1)
    return torch.stack((right, torch.linalg.cross(right, fwd), fwd), 1)


def _yaw_matrix(deg: Tensor) -> Tensor:
    """Object-to-world rotation about y by ``deg`` (..., 3, 3)."""
    a = torch.deg2rad(deg)
    c, s, z, o = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((c, z, s, z, o, z, -s, z, c), -1).view(*deg.shape, 3, 3)


class World:
    """A catalogue plus rendering settings; :meth:`render` turns a batch of :class:`Factors` into images."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.render_config: RenderConfig = self.config.render
        self.device = torch.device(self.render_config.device)
        self.catalog: Catalog = build_catalog(self.config.seed, self.config.instances_per_category).to(
            self.device
        )
        self._tracer = PairTracer(self.render_config.compile)
        self._shader = compiled_or_eager(shade_hits, self.render_config.compile)
        self._procedural = compiled_or_eager(procedural_background, self.render_config.compile)
        self._photo = photo_crops_fn(self.render_config.compile)
        self._images_and_masks = compiled_or_eager(images_and_masks, self.render_config.compile)

    # -- geometry of a batch -------------------------------------------------------------------------------------
    def _camera(self, f: Factors) -> tuple[Tensor, Tensor]:
        cam_pos = f.target + f.distance.unsqueeze(-1) * direction(f.azimuth, f.elevation)
        return cam_pos, look_at(cam_pos, f.target)

    def _parts(self, f: Factors, cam_pos: Tensor) -> dict[str, Tensor]:
        """Per-image part tables ``(B, O * P_MAX [+1 floor], ...)`` in world placement."""
        cat, B = self.catalog, f.category.shape[0]
        present = f.category >= 0
        c, i = f.category.clamp_min(0), f.instance.clamp_min(0) % cat.instances_per_category
        take = {
            k: getattr(cat, k)[c, i]
            for k in (
                "quad",
                "lo",
                "hi",
                "hquad",
                "hlo",
                "hhi",
                "rot",
                "centre",
                "color",
                "color2",
                "texture",
                "valid",
            )
        }
        tex = take["texture"].clone()
        override = f.texture_override.unsqueeze(-1).expand_as(tex[..., 0])
        tex[..., 0] = torch.where(override >= 0, override.to(tex.dtype), tex[..., 0])
        take["texture"] = tex
        # part-local x = R_p (R_o^T (x_w - c_o) / s_o - c_p): direction map M = R_p R_o^T / s_o
        r_obj = _yaw_matrix(f.yaw)  # (B, O, 3, 3) object -> world
        s = f.scale.view(*f.scale.shape, 1, 1, 1)
        m = take["rot"] @ r_obj.transpose(-1, -2).unsqueeze(2) / s
        rel = cam_pos.view(B, 1, 3) - f.position  # (B, O, 3)
        cam_obj = torch.einsum("boji,boj->boi", r_obj, rel) / f.scale.unsqueeze(-1)
        o_local = torch.einsum("bopij,bopj->bopi", take["rot"], cam_obj.unsqueeze(2) - take["centre"])
        valid = take["valid"] & present.unsqueeze(-1)
        obj = torch.arange(f.category.shape[1], device=self.device).view(1, -1, 1).expand_as(valid)
        out = {"o_local": o_local, "m": m, "obj": torch.where(valid, obj, -1)}
        for k in ("quad", "lo", "hi", "hquad", "hlo", "hhi", "color", "color2", "texture"):
            out[k] = take[k]
        # slots of absent objects get the empty quadric q = 1 > 0 (slab bounds alone cannot empty a region:
        # the slab test is symmetric in lo and hi)
        empty = torch.tensor(EMPTY_QUAD, device=self.device)
        out["quad"] = torch.where(valid.unsqueeze(-1), out["quad"], empty)
        out = {k: v.flatten(1, 2) for k, v in out.items()}
        if bool(f.floor.any()):
            out = _append_floor(out, f, cam_pos)
        return out

    # -- rendering -----------------------------------------------------------------------------------------------
    def render(self, factors: Factors, chunk: int | None = None) -> RenderOutput:
        """Render a batch of factors, in chunks of equal size (padded) so compiled kernels see few shapes."""
        factors = factors.to(self.device)
        B = factors.category.shape[0]
        chunk = chunk or self._default_chunk(factors.category.shape[1])
        outs = []
        for start in range(0, B, chunk):
            part = factors.slice(start, min(start + chunk, B))
            n = part.category.shape[0]
            if n < chunk and chunk < B:
                part = part.pad_to(chunk)
            outs.append(_slice_output(self._render_chunk(part), n))
        return _cat_outputs(outs, factors)

    def _default_chunk(self, n_objects: int) -> int:
        pixels = self.render_config.resolution**2
        return max(1, min(self.render_config.batch_size, 2**23 // (pixels * (n_objects + 1))))

    def _render_chunk(self, f: Factors) -> RenderOutput:
        rc = self.render_config
        H = W = rc.resolution
        s, S = rc.supersample, TILE
        B, O = f.category.shape
        cam_pos, cam_rot = self._camera(f)
        focal = 0.5 * H / math.tan(math.radians(rc.fov_deg) / 2)
        n_t = -(-H // S)
        T = n_t * n_t
        edges = torch.arange(n_t * S + 1, device=self.device, dtype=torch.float32)
        x_edges = (edges - W / 2 - f.shift[:, :1] * W) / focal  # (B, n_t S + 1) image-plane x of pixel edges
        y_edges = -(edges - H / 2 - f.shift[:, 1:] * H) / focal
        parts = self._parts(f, cam_pos)
        P, n_obj_parts = parts["quad"].shape[1], O * P_MAX
        rows = O + int(n_obj_parts < P)  # one reduction row per object, plus the floor
        light_dir = direction(f.light_azimuth, f.light_elevation)
        trace_table, has_hole, shade_table = _tables(parts, cam_rot, torch.cat((light_dir, f.light_rgb), 1))

        # culling: (image, tile, part) triples whose bounding sphere meets the tile's cone of rays
        sphere = part_spheres(*(parts[k][:, :n_obj_parts] for k in ("o_local", "m", "lo", "hi")))
        overlap = tile_overlaps(*sphere, *tile_cones(x_edges, y_edges, cam_rot, S, n_t))
        overlap &= (parts["obj"][:, :n_obj_parts] >= 0).unsqueeze(1)
        if n_obj_parts < P:
            overlap = torch.cat((overlap, f.floor.view(B, 1, 1).expand(B, T, 1)), 2)
        pb, pt, pp = overlap.nonzero(as_tuple=True)
        pair_row = torch.where(pp >= n_obj_parts, O, pp // P_MAX)
        pair_slot = torch.where(pp >= n_obj_parts, 0, pp % P_MAX)
        pair_part = pb * P + pp

        # pass 1: pixel centres, one group per tile
        origin = torch.stack((x_edges[pb, (pt % n_t) * S], y_edges[pb, (pt // n_t) * S]), -1)
        keys = self._tracer.nearest(
            trace_table,
            has_hole,
            pair_part,
            (pb * T + pt) * rows + pair_row,
            pair_slot,
            origin,
            sample_pattern(S, 1, focal, self.device),
            B * T * rows,
        )
        part, t, amodal, edge = resolve_tiles(keys, B, n_t, S, H, W, O, P, s, rc.adaptive)

        # pass 2: every sub-sample of edge pixels, against the parts of the pixel's tile
        eb, ey, ex = edge.nonzero(as_tuple=True)
        E, n = eb.numel(), s * s
        sub_pattern = sample_pattern(s, s, focal, self.device)
        per_tile = overlap.sum(-1).flatten()
        first = per_tile.cumsum(0) - per_tile
        tile = eb * T + (ey // S) * n_t + ex // S
        count = per_tile[tile]
        pair_edge = torch.arange(E, device=self.device).repeat_interleave(count)
        pick = first[tile].repeat_interleave(count) + ranks(count)
        keys2 = self._tracer.nearest(
            trace_table,
            has_hole,
            pair_part[pick],
            pair_edge * rows + pair_row[pick],
            pair_slot[pick],
            torch.stack((x_edges[eb, ex], y_edges[eb, ey]), -1)[pair_edge],
            sub_pattern,
            E * rows,
        )
        sub_part, sub_t, sub_amodal = decode_keys(keys2.view(n, E, rows).transpose(0, 1), O, P)

        # shading: the hit centres of interior pixels and the hit sub-samples of edge pixels
        ab, ay, ax = ((part >= 0) & ~edge).nonzero(as_tuple=True)
        he, hk = (sub_part >= 0).nonzero(as_tuple=True)
        hb = eb[he]
        rgb = self._shade(
            shade_table,
            torch.cat((ab, hb)),
            torch.cat(
                (0.5 * (x_edges[ab, ax] + x_edges[ab, ax + 1]), x_edges[hb, ex[he]] + sub_pattern[hk, 0])
            ),
            torch.cat(
                (0.5 * (y_edges[ab, ay] + y_edges[ab, ay + 1]), y_edges[hb, ey[he]] + sub_pattern[hk, 1])
            ),
            torch.cat((part[ab, ay, ax], sub_part[he, hk])),
            torch.cat((t[ab, ay, ax], sub_t[he, hk])),
            P,
            focal,
        )
        bg = make_background(
            f.background_kind, f.background_colors, f.background_params, H, W, self._procedural, self._photo
        )
        bg = bg.permute(0, 2, 3, 1) * f.light_rgb.view(B, 1, 1, 3)
        colour = bg.clone()
        colour[ab, ay, ax] = rgb[: ab.numel()]
        sub_colour = bg[eb, ey, ex].unsqueeze(1).expand(E, n, 3).clone()
        sub_colour[he, hk] = rgb[ab.numel() :]

        occ_rgb = blinn_phong(
            f.occluder_rgb,
            -cam_rot[:, 2],
            -cam_rot[:, 2],
            light_dir,
            f.light_rgb,
            rc.ambient,
            rc.diffuse,
            0.0,
            1.0,
        )
        samples = Samples(
            colour, object_of(part, O), amodal, (eb, ey, ex), sub_colour, object_of(sub_part, O), sub_amodal
        )
        comp = composite(f, samples, occ_rgb, s)
        centre_x = 0.5 * (x_edges[:, :W] + x_edges[:, 1 : W + 1])
        centre_y = 0.5 * (y_edges[:, :H] + y_edges[:, 1 : H + 1])
        ray_len = (centre_x.unsqueeze(1) ** 2 + centre_y.unsqueeze(2) ** 2 + 1).sqrt()
        depth = torch.where(part >= 0, t * ray_len, torch.full_like(t, math.inf))
        return _finish(f, comp, depth, self._images_and_masks)

    def _shade(
        self, table: Tensor, b: Tensor, x: Tensor, y: Tensor, part: Tensor, t: Tensor, P: int, focal: float
    ) -> Tensor:
        """Shade ``M`` hits given by image ``b``, image-plane ``(x, y)``, part index and distance ``t``.

        ``table`` ``(rows, B P)`` holds the shading record of every (image, part) as a column."""
        M = b.numel()
        if M == 0:
            return torch.zeros(0, 3, device=self.device)
        pad = (-M) % PAD
        index = b * P + part
        xy = torch.stack((x, y))
        if pad:
            index, t, xy = F.pad(index, (0, pad)), F.pad(t, (0, pad)), F.pad(xy, (0, pad))
        rc = self.render_config
        light = (1.0 / focal, rc.ambient, rc.diffuse, rc.specular, rc.shininess)
        # slices keep every temporary small enough for the allocator to recycle (fresh large blocks page-fault)
        rgb = [
            self._shader(
                table.index_select(1, index[i : i + SHADE_SLICE]),
                xy[:, i : i + SHADE_SLICE],
                t[i : i + SHADE_SLICE],
                *light,
            )
            for i in range(0, index.numel(), SHADE_SLICE)
        ]
        return torch.cat(rgb)[:M]


def _append_floor(parts: dict[str, Tensor], f: Factors, cam_pos: Tensor) -> dict[str, Tensor]:
    """A large checkered slab under y = 0 (object id -1: it is background in the masks)."""
    B, dev = cam_pos.shape[0], cam_pos.device
    on = f.floor.view(B, 1)
    floor = {
        "o_local": cam_pos.view(B, 1, 3) + torch.tensor([0.0, 0.05, 0.0], device=dev),
        "m": torch.eye(3, device=dev).expand(B, 1, 3, 3),
        "obj": torch.full((B, 1), -1, device=dev, dtype=torch.long),
        "quad": torch.where(
            on.unsqueeze(-1),
            torch.tensor([BOX_EPS, BOX_EPS, BOX_EPS, 0.0, -1.0], device=dev),
            torch.tensor(EMPTY_QUAD, device=dev),
        ),
        "lo": torch.where(
            on.unsqueeze(-1), torch.tensor([-60.0, -0.05, -60.0], device=dev), torch.ones(3, device=dev)
        ),
        "hi": torch.where(
            on.unsqueeze(-1), torch.tensor([60.0, 0.05, 60.0], device=dev), -torch.ones(3, device=dev)
        ),
        "hquad": torch.tensor(EMPTY_QUAD, device=dev).expand(B, 1, 5),
        "hlo": torch.ones(B, 1, 3, device=dev),
        "hhi": -torch.ones(B, 1, 3, device=dev),
        "color": f.floor_colors[:, 0:1],
        "color2": f.floor_colors[:, 1:2],
        "texture": torch.tensor([FLOOR_TEXTURE, 2.0, 0.0], device=dev).expand(B, 1, 3),
    }
    return {k: torch.cat((parts[k], floor[k].to(parts[k].dtype)), 1) for k in parts}


def _tables(parts: dict[str, Tensor], cam_rot: Tensor, light: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-part tracing records ``(TRACE_ROWS, B P)``, hole flags ``(B P,)`` and shading records
    ``(sum(SHADE_ROWS), B P)`` (with the image's camera axes and ``light`` ``(B, 6)``, one column per part).

    Tracing records hold ``A, B, C = M right, M up, M forward``: a ray ``x right + y up + forward`` has local
    direction ``x A + y B + C``.
    """
    m = parts["m"]
    abc = torch.einsum("bpij,bkj->bpki", m, cam_rot).flatten(2)  # (B, P, 9): M right, M up, M forward
    geometry = [parts[k] for k in ("o_local", "quad", "lo", "hi", "hquad", "hlo", "hhi")]
    trace = torch.cat((abc, *geometry), -1)
    empty_hole = torch.tensor(EMPTY_QUAD, device=m.device)
    has_hole = (parts["hquad"] - empty_hole).abs().sum(-1) > 0
    B, P = m.shape[:2]
    per_image = torch.cat((cam_rot.flatten(1), light), 1).unsqueeze(1).expand(B, P, 15)
    shade = torch.cat(
        (m.flatten(2), *geometry, parts["texture"], parts["color"], parts["color2"], per_image), -1
    )
    return trace.flatten(0, 1).T.contiguous(), has_hole.flatten(), shade.flatten(0, 1).T.contiguous()


def _finish(f: Factors, comp: Composite, depth: Tensor, masks) -> RenderOutput:
    images, inst, cats, boxes, amodal_boxes = masks(comp.colour, comp.label, comp.amodal_pixels, f.category)
    return RenderOutput(
        images=images,
        instance_mask=inst,
        category_mask=cats,
        boxes=boxes,
        amodal_boxes=amodal_boxes,
        visible_fraction=comp.visible / comp.amodal_area.clamp_min(1),
        occluded_fraction=comp.occluded_fraction,
        depth=depth,
        factors=f,
    )


def _slice_output(out: RenderOutput, n: int) -> RenderOutput:
    return replace(
        out,
        **{k.name: getattr(out, k.name)[:n] for k in fields(out) if k.name != "factors"},
        factors=out.factors.slice(0, n),
    )


def _cat_outputs(outs: list[RenderOutput], factors: Factors) -> RenderOutput:
    if len(outs) == 1:
        return replace(outs[0], factors=factors)
    cat = {
        k.name: torch.cat([getattr(o, k.name) for o in outs])
        for k in fields(RenderOutput)
        if k.name != "factors"
    }
    return RenderOutput(**cat, factors=factors)


_DEFAULT_WORLD: World | None = None


def render(factors: Factors, world: World | None = None) -> RenderOutput:
    """Render ``factors`` with ``world`` (default: a world with the default configuration, built once)."""
    global _DEFAULT_WORLD
    if world is None:
        if _DEFAULT_WORLD is None:
            _DEFAULT_WORLD = World()
        world = _DEFAULT_WORLD
    return world.render(factors)
