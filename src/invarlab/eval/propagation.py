"""Video instance segmentation by label propagation (PAPERS.md §2.4.4: videowalk's test protocol, used by P2
on DAVIS-2017), and DAVIS's region similarity J and boundary measure F.

Propagation. Dense maps are L2-normalised per position, ``f_t(p) ∈ R^C``. The first frame's ground truth
becomes soft labels ``y_0 ∈ [0, 1]^{L × h × w}`` (channel 0 background, channel ``j`` object ``ids[j-1]``;
one-hot at image resolution, area-averaged to the map). For ``t = 1 .. T−1``, with context frames
``𝒞(t) = {0} ∪ {max(1, t − n) .. t − 1}`` (the first frame always, and the ``n = context`` latest ones):

    a(p, (c, q)) = f_t(p) · f_c(q)                         for c ∈ 𝒞(t), ‖p − q‖₂ ≤ radius (map cells)
    N_k(p)       = the topk pairs (c, q) of largest a(p, ·)
    w(p, (c, q)) = exp(a / τ) / Σ_{N_k(p)} exp(a / τ)      (softmax over the top-k, temperature τ)
    y_t(p)       = Σ_{(c, q) ∈ N_k(p)} w(p, (c, q)) y_c(q)

so predictions (soft) feed the later frames. The mask of frame ``t`` is the argmax over channels of ``y_t``
upsampled bilinearly to image resolution. Defaults (P2's README command): topk 10, context 20, radius 12,
τ = 0.05. The computation runs in query tiles: a tile of ``tile x tile`` positions only meets keys in its
window grown by the radius, so memory stays ``O(tile² · |𝒞| · (tile + 2 radius)²)`` per step.

Metrics (Perazzi et al. 2016, the DAVIS toolkit's definitions), per object ``k`` and frame, void pixels
(255) left out of both masks:

* ``J = |M ∩ G| / |M ∪ G|``, and 1 when both are empty;
* ``F = 2 P R / (P + R)`` on boundaries: a pixel is a boundary pixel when it differs from its east, south or
  south-east neighbour (those inside the image); with ``d = ceil(0.008 · ‖(H, W)‖₂)`` (``bound_th`` ≥ 1 is
  taken as pixels), ``P`` is the share of predicted boundary pixels within a disk of radius ``d`` of a true
  one and ``R`` the share of true boundary pixels within ``d`` of a predicted one; no predicted boundary
  gives ``P = 1``, no true boundary ``R = 1``, neither gives ``F = 1``, and ``F = 0`` when ``P + R = 0``.

The first and the last frame are not scored (as the DAVIS toolkit does). ``J-Mean`` is the mean over all
objects of each object's mean over frames, ``J-Recall`` the mean share of frames with ``J > 0.5``; the same for
F; ``J&F-Mean = (J-Mean + F-Mean) / 2``. All reported in percent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.eval.dense import IGNORE_INDEX, upsample

__all__ = [
    "boundary_measure",
    "context_frames",
    "davis_summary",
    "evaluate_videos",
    "label_propagation",
    "mask_boundary",
    "propagate_frame",
    "region_similarity",
    "segment_video",
    "soft_labels",
    "video_scores",
]


def context_frames(t: int, context: int) -> list[int]:
    """``[0, max(1, t − context), ..., t − 1]``: the first frame and the ``context`` frames before ``t``."""
    return [0, *range(max(1, t - context), t)]


@torch.no_grad()
def propagate_frame(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    topk: int = 10,
    radius: float = 12.0,
    temperature: float = 0.05,
    tile: int = 16,
) -> Tensor:
    """``y_t`` ``(L, h, w)`` of one frame (module docstring) from its normalised map ``query`` ``(C, h, w)``,
    the context maps ``keys`` ``(M, C, h, w)`` and their labels ``values`` ``(M, L, h, w)``."""
    C, h, w = query.shape
    M, L = keys.shape[0], values.shape[1]
    r = math.floor(radius)
    dev = query.device
    out = torch.empty(L, h, w, dtype=values.dtype, device=dev)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        wy0, wy1 = max(0, y0 - r), min(h, y1 + r)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            wx0, wx1 = max(0, x0 - r), min(w, x1 + r)
            q = query[:, y0:y1, x0:x1].reshape(C, -1)
            k = keys[:, :, wy0:wy1, wx0:wx1].reshape(M, C, -1)
            sim = torch.einsum("cq,mcn->qmn", q, k)
            qy, qx = torch.meshgrid(
                torch.arange(y0, y1, device=dev), torch.arange(x0, x1, device=dev), indexing="ij"
            )
            ky, kx = torch.meshgrid(
                torch.arange(wy0, wy1, device=dev), torch.arange(wx0, wx1, device=dev), indexing="ij"
            )
            dist2 = (qy.reshape(-1, 1) - ky.reshape(1, -1)) ** 2 + (
                qx.reshape(-1, 1) - kx.reshape(1, -1)
            ) ** 2
            sim = sim.masked_fill((dist2 > radius**2).unsqueeze(1), float("-inf")).flatten(1)
            top, idx = sim.topk(min(topk, sim.shape[1]), dim=1)
            weight = torch.softmax(top / temperature, dim=1)  # pairs beyond the radius (-inf) weigh 0
            v = values[:, :, wy0:wy1, wx0:wx1].permute(1, 0, 2, 3).reshape(L, -1)
            pred = (v[:, idx] * weight.unsqueeze(0)).sum(-1)
            out[:, y0:y1, x0:x1] = pred.view(L, y1 - y0, x1 - x0)
    return out


@torch.no_grad()
def label_propagation(
    feats: Tensor,
    first: Tensor,
    topk: int = 10,
    context: int = 20,
    radius: float = 12.0,
    temperature: float = 0.05,
    tile: int = 16,
) -> Tensor:
    """Soft labels ``(T, L, h, w)`` of every frame of a clip from its dense maps ``feats`` ``(T, C, h, w)``
    and the first frame's soft labels ``first`` ``(L, h, w)`` (module docstring)."""
    if feats.shape[0] < 1 or first.shape[-2:] != feats.shape[-2:]:
        raise ValueError(f"first-frame labels {tuple(first.shape)} must match the maps {tuple(feats.shape)}")
    f = F.normalize(feats.float(), dim=1)
    labels = torch.empty(feats.shape[0], *first.shape, dtype=torch.float32, device=feats.device)
    labels[0] = first.to(labels)
    for t in range(1, feats.shape[0]):
        ctx = context_frames(t, context)
        labels[t] = propagate_frame(f[t], f[ctx], labels[ctx], topk, radius, temperature, tile)
    return labels


def soft_labels(mask: Tensor, ids: Sequence[int], size: Sequence[int]) -> Tensor:
    """``(1 + len(ids), h, w)``: the one-hot of ``mask`` ``(H, W)`` (channel 0 everything that is not one of
    ``ids``, void included) area-averaged to ``size``."""
    onehot = [~torch.isin(mask, torch.as_tensor(list(ids), device=mask.device))]
    onehot += [mask == k for k in ids]
    x = torch.stack(onehot).float().unsqueeze(0)
    return F.adaptive_avg_pool2d(x, tuple(size))[0]


def segment_video(feats: Tensor, first_mask: Tensor, ids: Sequence[int], **kwargs: Any) -> Tensor:
    """Object-id masks ``(T, H, W)`` (0 background) of a clip: propagate the labels of ``first_mask``
    ``(H, W)`` (objects ``ids``) with :func:`label_propagation` (``kwargs``) and upsample each frame; frame 0
    is ``first_mask`` itself (restricted to ``ids``), the given annotation."""
    H, W = first_mask.shape
    first_mask = first_mask.to(feats.device)
    y = label_propagation(feats, soft_labels(first_mask, ids, feats.shape[-2:]), **kwargs)
    lut = torch.tensor([0, *ids], device=feats.device)
    given = torch.where(torch.isin(first_mask, lut[1:]), first_mask, 0)
    masks = [given] + [lut[upsample(y[t : t + 1], (H, W))[0].argmax(0)] for t in range(1, len(y))]
    return torch.stack(masks).cpu()


def region_similarity(pred: Tensor, gt: Tensor, void: Tensor | None = None) -> Tensor:
    """``J`` per frame (float64 ``(T,)``) of boolean masks ``(T, H, W)``; 1 where both are empty."""
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    inter = (pred & gt).flatten(1).sum(1).double()
    union = (pred | gt).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def mask_boundary(mask: Tensor) -> Tensor:
    """Boundary pixels ``(T, H, W)`` of boolean masks: differing from the east, south or south-east
    neighbour (only neighbours inside the image count)."""
    b = torch.zeros_like(mask)
    b[:, :, :-1] |= mask[:, :, :-1] ^ mask[:, :, 1:]
    b[:, :-1, :] |= mask[:, :-1, :] ^ mask[:, 1:, :]
    b[:, :-1, :-1] |= mask[:, :-1, :-1] ^ mask[:, 1:, 1:]
    return b


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``(T, H, W)`` by the disk ``x² + y² ≤ radius²``."""
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, device=mask.device)
    disk = ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius**2).float()
    out = F.conv2d(mask.float().unsqueeze(1), disk[None, None], padding=radius)
    return out[:, 0] > 0.5


def boundary_measure(pred: Tensor, gt: Tensor, void: Tensor | None = None, bound_th: float = 0.008) -> Tensor:
    """``F`` per frame (float64 ``(T,)``) of boolean masks ``(T, H, W)`` (module docstring)."""
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    H, W = pred.shape[-2:]
    d = int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(H, W))
    fb, gb = mask_boundary(pred), mask_boundary(gt)
    n_f = fb.flatten(1).sum(1).double()
    n_g = gb.flatten(1).sum(1).double()
    f_hit = (fb & _dilate(gb, d)).flatten(1).sum(1).double()
    g_hit = (gb & _dilate(fb, d)).flatten(1).sum(1).double()
    precision = torch.where(n_f > 0, f_hit / n_f.clamp_min(1), torch.ones_like(n_f))
    recall = torch.where(n_g > 0, g_hit / n_g.clamp_min(1), torch.ones_like(n_g))
    # DAVIS: a missing prediction boundary against a real one is P = 1, R = 0; the reverse P = 0, R = 1.
    precision = torch.where((n_f == 0) & (n_g > 0), 1.0, torch.where((n_f > 0) & (n_g == 0), 0.0, precision))
    recall = torch.where((n_f == 0) & (n_g > 0), 0.0, torch.where((n_f > 0) & (n_g == 0), 1.0, recall))
    s = precision + recall
    return torch.where(s > 0, 2 * precision * recall / s.clamp_min(1e-12), torch.zeros_like(s))


def video_scores(
    pred: Tensor, gt: Tensor, annotated: Tensor, ids: Sequence[int], bound_th: float = 0.008
) -> dict[int, tuple[Tensor, Tensor]]:
    """``{object id: (J per frame, F per frame)}`` over the annotated frames other than the first and last."""
    frames = [t for t in range(1, len(gt) - 1) if bool(annotated[t])]
    if not frames:
        return {}
    p, g = pred[frames], gt[frames]
    void = g == IGNORE_INDEX
    return {
        k: (region_similarity(p == k, g == k, void), boundary_measure(p == k, g == k, void, bound_th))
        for k in ids
    }


def davis_summary(scores: Sequence[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``F-Mean``, ``F-Recall`` (percent) over objects' ``(J, F)``."""
    if not scores:
        return {k: float("nan") for k in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall")}
    j = torch.stack([s[0].mean() for s in scores])
    f = torch.stack([s[1].mean() for s in scores])
    jr = torch.stack([(s[0] > 0.5).double().mean() for s in scores])
    fr = torch.stack([(s[1] > 0.5).double().mean() for s in scores])
    out = {"J-Mean": j.mean(), "J-Recall": jr.mean(), "F-Mean": f.mean(), "F-Recall": fr.mean()}
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    return {k: float(v) * 100 for k, v in out.items()}


def evaluate_videos(
    videos: Iterable[tuple[str, Tensor, Tensor, Tensor]], bound_th: float = 0.008, **kwargs: Any
) -> dict[str, Any]:
    """Segment and score clips given as ``(name, feats (T, C, h, w), masks (T, H, W), annotated (T,))``: the
    first frame's objects are propagated (:func:`segment_video` with ``kwargs``) and scored against the
    masks. Returns :func:`davis_summary` plus ``objects``, ``videos`` and ``per_video`` J&F-Mean."""
    scores: list[tuple[Tensor, Tensor]] = []
    per_video: dict[str, float] = {}
    n_videos = 0
    for name, feats, masks, annotated in videos:
        n_videos += 1
        ids = [int(k) for k in torch.unique(masks[0]) if 0 < int(k) < IGNORE_INDEX]
        if not ids:
            continue
        pred = segment_video(feats, masks[0], ids, **kwargs)
        obj = list(video_scores(pred, masks.cpu(), annotated, ids, bound_th).values())
        if obj:
            scores += obj
            per_video[name] = davis_summary(obj)["J&F-Mean"]
    out: dict[str, Any] = davis_summary(scores)
    out.update(objects=len(scores), videos=n_videos, per_video=per_video)
    return out
