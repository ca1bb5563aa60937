"""The batched renderer: ray casting of composed parts, Blinn-Phong shading, occluders, supersampling.

One fused tensor program (``torch.compile`` where available, the same code eagerly otherwise) intersects every
ray of a batch with every part of every object in its image, keeps the nearest hit, shades it and composites
the background. Occluders, masks, boxes and the anti-aliasing reduction follow in plain tensor code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .background import make_background
from .catalog import HOLE_SLOTS, P_MAX, Catalog, build_catalog
from .config import RenderConfig, WorldConfig
from .factors import Factors
from .geometry import BIG, BOX_EPS, holed_distance, part_hits, shell_distance, surface_normal
from .shading import blinn_phong, direction, texture_mix

log = logging.getLogger(__name__)
OCCLUDER_LABEL = 255
EMPTY_QUAD = (0.0, 0.0, 0.0, 0.0, 1.0)  # q = 1 > 0 everywhere: a region with no inside
OCCLUDER_SHAPES = ("none", "bar", "disc")
FLOOR_TEXTURE = 5  # tiles


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
    depth: Tensor  # (B, H, W) float camera distance at pixel centres' first sample; inf for background
    factors: Factors


def _kernel(
    o_local: Tensor,  # (B, P, 3) camera position in each part's frame; P = O * P_MAX (+ 1 floor)
    m: Tensor,  # (B, P, 3, 3) world direction -> part-local direction
    dirs: Tensor,  # (B, R, 3) world ray directions (not normalised)
    quad: Tensor,
    lo: Tensor,
    hi: Tensor,
    hquad: Tensor,
    hlo: Tensor,
    hhi: Tensor,  # (B, P, 5|3)
    obj: Tensor,  # (B, P) object index, -1 for the floor and empty slots
    color: Tensor,
    color2: Tensor,
    tex: Tensor,  # (B, P, 3)
    light_dir: Tensor,
    light_rgb: Tensor,  # (B, 3)
    background: Tensor,  # (B, R, 3)
    n_objects: int,
    has_floor: bool,
    ambient: float,
    diffuse: float,
    specular: float,
    shininess: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, P, R, O = quad.shape[0], quad.shape[1], dirs.shape[1], n_objects
    # hot loop: distance to every part along every ray; holes only in the first HOLE_SLOTS slots of an object
    d_local = (m.unsqueeze(2) * dirs.view(B, 1, R, 1, 3)).sum(-1)  # (B, P, R, 3)
    o = o_local.unsqueeze(2)

    def obj_view(x: Tensor, a: int, b: int) -> Tensor:  # (B, P, ...) -> (B, O, b - a, 1, k) for slots a..b
        return x[:, : O * P_MAX].reshape(B, O, P_MAX, *x.shape[2:])[:, :, a:b].unsqueeze(3)

    d_obj = d_local[:, : O * P_MAX].reshape(B, O, P_MAX, R, 3)
    t_holed = holed_distance(
        obj_view(o_local, 0, HOLE_SLOTS),
        d_obj[:, :, :HOLE_SLOTS],
        (obj_view(quad, 0, HOLE_SLOTS), obj_view(lo, 0, HOLE_SLOTS), obj_view(hi, 0, HOLE_SLOTS)),
        (obj_view(hquad, 0, HOLE_SLOTS), obj_view(hlo, 0, HOLE_SLOTS), obj_view(hhi, 0, HOLE_SLOTS)),
    )
    t_plain = shell_distance(
        obj_view(o_local, HOLE_SLOTS, P_MAX),
        d_obj[:, :, HOLE_SLOTS:],
        obj_view(quad, HOLE_SLOTS, P_MAX),
        obj_view(lo, HOLE_SLOTS, P_MAX),
        obj_view(hi, HOLE_SLOTS, P_MAX),
    )
    t_obj, slot = torch.cat((t_holed, t_plain), 2).min(2)  # (B, O, R)
    amodal = t_obj < 0.5 * BIG
    t_min, best_obj = t_obj.min(1)
    part = best_obj * P_MAX + torch.gather(slot, 1, best_obj.unsqueeze(1)).squeeze(1)
    if has_floor:
        t_floor = shell_distance(o[:, -1], d_local[:, -1], quad[:, -1:], lo[:, -1:], hi[:, -1:])
        part = torch.where(t_floor < t_min, P - 1, part)
        t_min = torch.minimum(t_floor, t_min)
    any_hit = t_min < 0.5 * BIG

    # per ray: re-intersect the one part that was hit, for its face, normal and texture. One gather of a packed
    # per-part table is much cheaper than one gather per parameter.
    table = torch.cat(
        (
            m.reshape(B, P, 9),
            o_local,
            quad,
            lo,
            hi,
            hquad,
            hlo,
            hhi,
            tex,
            color,
            color2,
            obj.unsqueeze(-1).to(m.dtype),
        ),
        -1,
    )
    rows = torch.gather(table, 1, part.unsqueeze(-1).expand(B, R, table.shape[-1]))
    m_r, o_r, quad_r, lo_r, hi_r, hquad_r, hlo_r, hhi_r, tex_r, color_r, color2_r, obj_r = rows.split(
        (9, 3, 5, 3, 3, 5, 3, 3, 3, 3, 3, 1), -1
    )
    m_r = m_r.reshape(B, R, 3, 3)
    d_r = (m_r * dirs.unsqueeze(2)).sum(-1)
    _, _, face_r, hole_r = part_hits(o_r, d_r, (quad_r, lo_r, hi_r), (hquad_r, hlo_r, hhi_r))
    p_r = o_r + t_min.clamp_max(1e3).unsqueeze(-1) * d_r
    n_local = surface_normal(p_r, d_r, face_r, torch.where(hole_r.unsqueeze(-1), hquad_r, quad_r))
    normal = F.normalize((m_r * n_local.unsqueeze(-1)).sum(-2), dim=-1)  # M^T n
    mix = texture_mix(p_r, tex_r[..., 0].round(), tex_r[..., 1], tex_r[..., 2]).unsqueeze(-1)
    albedo = color_r * (1 - mix) + color2_r * mix
    view = -F.normalize(dirs, dim=-1)
    lit = blinn_phong(
        albedo,
        normal,
        view,
        light_dir.unsqueeze(1),
        light_rgb.unsqueeze(1),
        ambient,
        diffuse,
        specular,
        shininess,
    )
    rgb = torch.where(any_hit.unsqueeze(-1), lit, background * light_rgb.unsqueeze(1))
    label = torch.where(any_hit, obj_r.squeeze(-1).round().long(), torch.full_like(part, -1))
    depth = torch.where(any_hit, t_min * dirs.norm(dim=-1), torch.full_like(t_min, math.inf))
    return rgb, label, depth, amodal


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
        self._compiled = None
        self._use_compile = self.render_config.compile

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
    def _run_kernel(self, *args, **kw):
        if self._use_compile and self._compiled is None:
            try:
                import torch._dynamo

                torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
                self._compiled = torch.compile(_kernel, dynamic=False)
            except Exception as exc:  # pragma: no cover - depends on the toolchain
                log.warning("torch.compile unavailable (%s); rendering eagerly", exc)
                self._use_compile = False
        if self._use_compile:
            try:
                return self._compiled(*args, **kw)
            except Exception as exc:  # pragma: no cover - depends on the toolchain
                log.warning("compiled renderer failed (%s); rendering eagerly", exc)
                self._use_compile = False
        return _kernel(*args, **kw)

    def render(self, factors: Factors, chunk: int | None = None) -> RenderOutput:
        """Render a batch of factors, in chunks of equal size (padded) so the compiled kernel is reused."""
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
        rays = (self.render_config.resolution * self.render_config.supersample) ** 2
        return max(1, min(self.render_config.batch_size, int(2**22 // (rays * n_objects * P_MAX))))

    def _render_chunk(self, f: Factors) -> RenderOutput:
        rc = self.render_config
        H = W = rc.resolution
        s = rc.supersample
        _B, O = f.category.shape
        cam_pos, cam_rot = self._camera(f)
        focal = 0.5 * H / math.tan(math.radians(rc.fov_deg) / 2)
        coords = _sample_coords(H, W, s, self.device)  # (R, 2) pixel units (x, y)
        x = (coords[:, 0].view(1, -1) - W / 2 - f.shift[:, :1] * W) / focal
        y = -(coords[:, 1].view(1, -1) - H / 2 - f.shift[:, 1:] * H) / focal
        dirs = (
            x.unsqueeze(-1) * cam_rot[:, None, 0]
            + y.unsqueeze(-1) * cam_rot[:, None, 1]
            + cam_rot[:, None, 2]
        )
        parts = self._parts(f, cam_pos)
        bg = make_background(f.background_kind, f.background_colors, f.background_params, H, W)
        bg = bg.repeat_interleave(s, 2).repeat_interleave(s, 3).flatten(2).transpose(1, 2)
        light_dir = direction(f.light_azimuth, f.light_elevation)
        rgb, label, depth, amodal = self._run_kernel(
            parts["o_local"],
            parts["m"],
            dirs,
            parts["quad"],
            parts["lo"],
            parts["hi"],
            parts["hquad"],
            parts["hlo"],
            parts["hhi"],
            parts["obj"],
            parts["color"],
            parts["color2"],
            parts["texture"],
            light_dir,
            f.light_rgb,
            bg,
            n_objects=O,
            has_floor=bool(f.floor.any()),
            ambient=rc.ambient,
            diffuse=rc.diffuse,
            specular=rc.specular,
            shininess=rc.shininess,
        )
        covered = _occluder_cover(f, amodal[:, 0], coords)
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
        rgb = torch.where(covered.unsqueeze(-1), occ_rgb.unsqueeze(1), rgb)
        label = torch.where(covered, torch.full_like(label, O), label)
        return _finish(f, rgb, label, depth, amodal, covered, H, W, s)


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
        "hquad": torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], device=dev).expand(B, 1, 5),
        "hlo": torch.ones(B, 1, 3, device=dev),
        "hhi": -torch.ones(B, 1, 3, device=dev),
        "color": f.floor_colors[:, 0:1],
        "color2": f.floor_colors[:, 1:2],
        "texture": torch.tensor([FLOOR_TEXTURE, 2.0, 0.0], device=dev).expand(B, 1, 3),
    }
    return {k: torch.cat((parts[k], floor[k].to(parts[k].dtype)), 1) for k in parts}


_COORDS: dict = {}


def _sample_coords(H: int, W: int, s: int, device) -> Tensor:
    """Sample positions (x, y) in pixel units on the supersampled raster, row-major: an s x s grid per pixel."""
    key = (H, W, s, str(device))
    if key not in _COORDS:
        ys = (torch.arange(H * s, device=device, dtype=torch.float32) + 0.5) / s
        xs = (torch.arange(W * s, device=device, dtype=torch.float32) + 0.5) / s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        _COORDS[key] = torch.stack((xx.flatten(), yy.flatten()), -1)
    return _COORDS[key]


def _occluder_cover(f: Factors, silhouette: Tensor, coords: Tensor) -> Tensor:
    """Samples covered by each image's occluder, a plate parallel to the image plane in front of the scene.

    A bar is a half-plane whose edge is perpendicular to ``occluder_angle``; a disc is centred on the silhouette
    sample at rank ``occluder_anchor``. The edge (bar offset, disc radius) is the ``coverage`` quantile of the
    silhouette samples' signed distance, so the plate covers exactly that fraction of object 0's silhouette
    samples (up to ties).
    """
    B, R = silhouette.shape
    shape = f.occluder_shape
    count = silhouette.sum(1)
    a = torch.deg2rad(f.occluder_angle)
    proj = coords[:, 0].view(1, R) * a.cos().view(B, 1) + coords[:, 1].view(1, R) * a.sin().view(B, 1)
    rank = (f.occluder_anchor * count).floor().long().clamp_min(0)
    order = torch.cumsum(silhouette.long(), 1) - 1
    is_anchor = silhouette & (order == rank.view(B, 1))
    anchor = (is_anchor.unsqueeze(-1) * coords.view(1, R, 2)).sum(1)  # (B, 2)
    dist = (coords.view(1, R, 2) - anchor.view(B, 1, 2)).norm(dim=-1)
    key = torch.where((shape == 2).view(B, 1), dist, proj)
    ordered = torch.where(silhouette, key, torch.full_like(key, math.inf)).sort(1).values
    k = (f.occluder_coverage * count).round().long().clamp(0, R - 1)
    edge = torch.gather(ordered, 1, k.view(B, 1))
    full = k >= count
    covered = (key < edge) | full.view(B, 1)
    return covered & (shape > 0).view(B, 1) & (count > 0).view(B, 1)


def _finish(f, rgb, label, depth, amodal, covered, H, W, s) -> RenderOutput:
    B, O = f.category.shape
    grid = (B, H * s, W * s)
    img = F.avg_pool2d(rgb.transpose(1, 2).reshape(B, 3, H * s, W * s), s)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    codes = torch.arange(-1, O + 1, device=label.device)  # background, objects, occluder (code O)
    votes = F.avg_pool2d((label.view(*grid, 1) == codes).permute(0, 3, 1, 2).float(), s)
    pix = codes[votes.argmax(1)]  # (B, H, W) majority label per pixel
    inst = torch.where(pix == O, OCCLUDER_LABEL, pix + 1).to(torch.uint8)
    cats = torch.where(
        (pix >= 0) & (pix < O),
        f.category.gather(1, pix.clamp(0, O - 1).flatten(1)).view(B, H, W) + 1,
        torch.zeros_like(pix),
    ).to(torch.uint8)
    area = amodal.sum(-1)
    visible = (label.unsqueeze(1) == torch.arange(O, device=label.device).view(1, O, 1)).sum(-1)
    occluded = (covered & amodal[:, 0]).sum(-1) / area[:, 0].clamp_min(1)
    obj_pix = pix.unsqueeze(1) == torch.arange(O, device=pix.device).view(1, O, 1, 1)
    amodal_pix = F.max_pool2d(amodal.view(B, O, H * s, W * s).float(), s) > 0
    return RenderOutput(
        images=images,
        instance_mask=inst,
        category_mask=cats,
        boxes=_boxes(obj_pix),
        amodal_boxes=_boxes(amodal_pix),
        visible_fraction=visible / area.clamp_min(1),
        occluded_fraction=occluded,
        depth=depth.view(*grid)[:, ::s, ::s],
        factors=f,
    )


def _boxes(mask: Tensor) -> Tensor:
    """Tight boxes ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of boolean masks ``(B, O, H, W)``; -1 where empty."""
    H, W = mask.shape[-2:]
    cols, rows = mask.any(-2), mask.any(-1)
    x0 = cols.float().argmax(-1)
    x1 = W - cols.flip(-1).float().argmax(-1)
    y0 = rows.float().argmax(-1)
    y1 = H - rows.flip(-1).float().argmax(-1)
    box = torch.stack((x0, y0, x1, y1), -1).float()
    return torch.where(cols.any(-1, keepdim=True), box, torch.full_like(box, -1.0))


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
