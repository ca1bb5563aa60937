"""From traced samples to images and masks: occluder placement, anti-aliasing, majority-vote masks, counts.

Every pixel has ``s x s`` sub-samples. The renderer traces the pixel centre of every pixel and all sub-samples
only of *edge* pixels (where the centre sample's surface differs from a neighbour's); an interior pixel's
sub-samples all take its centre's value. The occluder is a plate in front of the scene that is cheap to test
at every sub-sample, so it is resolved exactly at sub-sample level. A pixel is *mixed* when its sub-samples
disagree (an edge pixel, or one the occluder's boundary crosses); only mixed pixels are averaged and voted at
sub-sample level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .factors import Factors

OCCLUDER_LABEL = 255  # instance-mask value of occluder pixels


@dataclass
class Samples:
    """Pixel-centre values for every pixel, and sub-sample values for the edge pixels ``(eb, ey, ex)``."""

    colour: Tensor  # (B, H, W, 3)
    label: Tensor  # (B, H, W) object index, -1 background / floor
    amodal: Tensor  # (B, O, H, W) bool: inside object o's silhouette (ignoring other objects)
    edge: tuple[Tensor, Tensor, Tensor]  # (E,) image, row, column of each edge pixel
    sub_colour: Tensor  # (E, s², 3)
    sub_label: Tensor  # (E, s²)
    sub_amodal: Tensor  # (E, s², O)


@dataclass
class Composite:
    colour: Tensor  # (B, H, W, 3) float
    label: Tensor  # (B, H, W) long: object index, -1 background, O occluder
    amodal_pixels: Tensor  # (B, O, H, W) bool: any sub-sample inside the silhouette
    visible: Tensor  # (B, O) sub-samples showing object o
    amodal_area: Tensor  # (B, O) sub-samples inside o's silhouette
    occluded_fraction: Tensor  # (B,) of object 0's silhouette sub-samples behind the occluder


def sub_coords(H: int, W: int, s: int, device) -> Tensor:
    """Sub-sample positions ``(H s W s, 2)`` ``(x, y)`` in pixel units, row-major on the ``Hs x Ws`` raster."""
    ys = (torch.arange(H * s, device=device, dtype=torch.float32) + 0.5) / s
    xs = (torch.arange(W * s, device=device, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.flatten(), yy.flatten()), -1)


def upsample(x: Tensor, s: int) -> Tensor:
    """``(B, H, W)`` -> ``(B, H s, W s)``, each pixel repeated over its sub-samples."""
    return x.repeat_interleave(s, 1).repeat_interleave(s, 2)


def occluder_cover(f: Factors, silhouette: Tensor, coords: Tensor) -> Tensor:
    """Sub-samples covered by each image's occluder, a plate parallel to the image plane in front of the scene.

    A bar is a half-plane whose edge is perpendicular to ``occluder_angle``; a disc is centred on the silhouette
    sample at rank ``occluder_anchor``. The edge (bar offset, disc radius) is the ``coverage`` quantile of the
    silhouette samples' signed distance, so the plate covers exactly that fraction of object 0's silhouette
    samples (up to ties). ``silhouette`` is ``(B, R)`` over the sub-sample raster ``coords`` ``(R, 2)``.
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


def _occluder_samples(f: Factors, smp: Samples, s: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Occluder coverage of the images that have one, at sub-sample level.

    Returns ``(images (K,), slot (B,), covered (K, H, W, s²) bool, occluded_fraction (B,))`` where
    ``slot[b]`` is image ``b``'s row in ``covered`` (-1 without an occluder).
    """
    B, _, H, W = smp.amodal.shape
    device = smp.label.device
    occluded = torch.zeros(B, device=device)
    occ = torch.nonzero(f.occluder_shape > 0).squeeze(1)
    slot = torch.full((B,), -1, dtype=torch.long, device=device)
    if occ.numel() == 0:
        return occ, slot, torch.zeros(0, H, W, s * s, dtype=torch.bool, device=device), occluded
    # object 0's silhouette on the sub-sample raster of the occluded images: centres, then edge sub-samples
    slot[occ] = torch.arange(occ.numel(), device=device)
    sil = upsample(smp.amodal[occ, 0], s).view(occ.numel(), H, s, W, s)
    eb, ey, ex = smp.edge
    mine = slot[eb] >= 0
    sil[slot[eb[mine]], ey[mine], :, ex[mine], :] = smp.sub_amodal[mine, :, 0].view(-1, s, s)
    sil = sil.view(occ.numel(), -1)
    cover = occluder_cover(f.index(occ), sil, sub_coords(H, W, s, device))
    occluded[occ] = (cover & sil).sum(1) / sil.sum(1).clamp_min(1)
    covered = cover.view(-1, H, s, W, s).permute(0, 1, 3, 2, 4).reshape(-1, H, W, s * s)
    return occ, slot, covered, occluded


def composite(f: Factors, smp: Samples, occluder_rgb: Tensor, s: int) -> Composite:
    """Resolve occluder, anti-aliasing and masks; ``occluder_rgb`` ``(B, 3)`` is the lit plate colour."""
    B, O, H, W = smp.amodal.shape
    n, device = s * s, smp.label.device
    eb, ey, ex = smp.edge
    E = eb.numel()
    colour, label = smp.colour.clone(), smp.label.clone()
    is_edge = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    is_edge[eb, ey, ex] = True

    # mixed pixels: the edge pixels (traced sub-samples), then pixels the occluder's boundary crosses (their
    # centre repeated); fully covered pixels show the plate
    mb, my, mx = eb, ey, ex
    sub_label, sub_colour = smp.sub_label, smp.sub_colour
    occ, slot, covered, occluded = _occluder_samples(f, smp, s)
    if occ.numel():
        n_cov = covered.sum(-1)
        full = torch.zeros(B, H, W, dtype=torch.bool, device=device)
        full[occ] = n_cov == n
        colour[full] = occluder_rgb.view(B, 1, 1, 3).expand(B, H, W, 3)[full]
        label[full] = O
        k, ky, kx = torch.nonzero((n_cov > 0) & (n_cov < n) & ~is_edge[occ], as_tuple=True)
        kb = occ[k]
        mb, my, mx = torch.cat((eb, kb)), torch.cat((ey, ky)), torch.cat((ex, kx))
        sub_label = torch.cat((sub_label, label[kb, ky, kx].unsqueeze(1).expand(-1, n)))
        sub_colour = torch.cat((sub_colour, colour[kb, ky, kx].unsqueeze(1).expand(-1, n, 3)))
        has = slot[mb] >= 0
        cov = torch.zeros(mb.numel(), n, dtype=torch.bool, device=device)
        cov[has] = covered[slot[mb[has]], my[has], mx[has]]
        sub_label = torch.where(cov, O, sub_label)
        sub_colour = torch.where(cov.unsqueeze(-1), occluder_rgb[mb].unsqueeze(1), sub_colour)
    if mb.numel():
        votes = F.one_hot(sub_label + 1, O + 2).sum(1)  # codes -1 (background) .. O (occluder)
        label[mb, my, mx] = votes.argmax(1) - 1
        colour[mb, my, mx] = sub_colour.mean(1)

    # sub-sample counts per image and code: whole pixels count n times, mixed pixels their sub-samples
    codes = O + 2
    weight = torch.full((B, H, W), float(n), device=device)
    weight[mb, my, mx] = 0.0
    counts = torch.bincount(
        (torch.arange(B, device=device).view(B, 1, 1) * codes + label + 1).flatten(),
        weight.flatten(),
        B * codes,
    )
    sub_codes = mb.unsqueeze(1) * codes + sub_label + 1
    counts += torch.bincount(sub_codes.flatten(), minlength=B * codes)[: B * codes]
    visible = counts.view(B, codes)[:, 1 : O + 1].round().long()
    amodal_area = n * (smp.amodal & ~is_edge.unsqueeze(1)).flatten(2).sum(-1)
    amodal_area.index_put_(
        (eb.unsqueeze(1), torch.arange(O, device=device).view(1, O)), smp.sub_amodal.sum(1), True
    )
    amodal_pixels = smp.amodal.clone()
    if E:
        amodal_pixels[eb, :, ey, ex] = smp.sub_amodal.any(1)
    return Composite(colour, label, amodal_pixels, visible, amodal_area, occluded)


def images_and_masks(
    colour: Tensor, label: Tensor, amodal: Tensor, category: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """uint8 images ``(B, 3, H, W)``, instance and category masks, visible and amodal boxes."""
    O = category.shape[1]
    images = (colour.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 3, 1, 2).contiguous()
    inst = torch.where(label == O, OCCLUDER_LABEL, label + 1).to(torch.uint8)
    is_object = (label >= 0) & (label < O)
    cats = category.gather(1, label.clamp(0, O - 1).flatten(1)).view_as(label) + 1
    cats = torch.where(is_object, cats, 0).to(torch.uint8)
    obj_pix = label.unsqueeze(1) == torch.arange(O, device=label.device).view(1, O, 1, 1)
    return images, inst, cats, boxes_of(obj_pix), boxes_of(amodal)


def boxes_of(mask: Tensor) -> Tensor:
    """Tight boxes ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of boolean masks ``(B, O, H, W)``; -1 where empty."""
    H, W = mask.shape[-2:]
    cols, rows = mask.any(-2), mask.any(-1)
    x0 = cols.float().argmax(-1)
    x1 = W - cols.flip(-1).float().argmax(-1)
    y0 = rows.float().argmax(-1)
    y1 = H - rows.flip(-1).float().argmax(-1)
    box = torch.stack((x0, y0, x1, y1), -1).float()
    return torch.where(cols.any(-1, keepdim=True), box, torch.full_like(box, -1.0))
