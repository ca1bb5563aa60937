"""Unsupervised region tracks on raw video: OpenCV region proposals, then optical-flow box propagation.

P1's Region Tracker follows region proposals from frame ``t`` to ``t + Δ`` (PAPERS.md §1.6; the proposal
source and tracker are [N/A] there). OpenCV's contrib modules (edge boxes, saliency) are not in
``opencv-python-headless``, so the proposals are built from core OpenCV:

- ``edges``: Canny edges (thresholds 0.66 / 1.33 x the median intensity), closed by a 3 x 3 dilation; the
  bounding box of every external contour is a proposal, scored by its area.
- ``saliency``: the spectral-residual saliency map (Hou & Zhang, CVPR 2007) on a 64 x 64 copy of the frame:
  ``S = |F⁻¹[exp(log|F(I)| − h₃ * log|F(I)| + i arg F(I))]|²``, Gaussian-smoothed, thresholded at three
  times its mean; each connected component's box is a proposal, scored by its summed saliency.

In both, boxes whose shorter side is under ``min_side``, that cover more than 80% of the frame or whose aspect
ratio exceeds 4 are dropped, then non-maximum suppression at IoU 0.5 keeps the ``top_k`` best.

The tracker propagates every box frame by frame with dense Farnebäck flow (``cv2.calcOpticalFlowFarneback``):
the box moves by the median flow of its pixels and scales by the least-squares scale of their displacements
about their mean (clipped to [0.8, 1.25] per frame). **Lost-track filter**: a track is dropped, for good, when

1. less than ``min_inside`` of its box lies inside the frame (it left the picture), or
2. its shorter side falls under ``min_side``, or
3. (with ``fb_error > 0``) less than ``min_consistent`` of its pixels pass the forward-backward check
   ``|f_fwd(p) + f_bwd(p + f_fwd(p))| < fb_error`` (the flow there is not trustworthy: occlusion, blur, no
   texture); only consistent pixels vote for the motion.

Frames larger than ``max_side`` are downscaled for the flow; boxes stay in native pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "PROPOSAL_METHODS",
    "TrackerConfig",
    "box_iou",
    "farneback",
    "inside_fraction",
    "nms",
    "propose",
    "spectral_residual_saliency",
    "track_boxes",
]

PROPOSAL_METHODS = ("edges", "saliency")
MAX_AREA = 0.8  # proposals covering more of the frame are the background, not a region
MAX_ASPECT = 4.0


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of :func:`track_boxes` and :func:`propose` (see the module docstring)."""

    min_inside: float = 0.6
    min_side: float = 6.0
    fb_error: float = 1.0  # pixels; 0 turns the forward-backward check off
    min_consistent: float = 0.5
    max_side: int = 256  # flow is computed on frames downscaled to at most this side
    top_k: int = 8  # proposals kept per frame


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of ``x0, y0, x1, y1`` boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, top_k: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    for i in order:
        if keep and box_iou(boxes[i], boxes[keep]).max() > iou:
            continue
        keep.append(int(i))
        if top_k is not None and len(keep) >= top_k:
            break
    return np.array(keep, dtype=np.int64)


def inside_fraction(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fraction of each box's area inside the ``height`` x ``width`` frame."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 1e-12, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 1e-12, None)
    iw = np.clip(np.minimum(boxes[:, 2], width) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], height) - np.maximum(boxes[:, 1], 0), 0, None)
    return iw * ih / (w * h)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def spectral_residual_saliency(frame: np.ndarray, side: int = 64) -> np.ndarray:
    """Hou & Zhang's spectral-residual saliency of an RGB or gray frame, in [0, 1] at the frame's size."""
    gray = cv2.resize(_gray(frame), (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)
    if gray.std() < 1.0:  # a flat frame: the residual is rounding noise, which the scaling would blow up
        return np.zeros(frame.shape[:2])
    spectrum = np.fft.fft2(gray)
    log_amp = np.log(np.abs(spectrum) + 1e-9)
    residual = log_amp - cv2.blur(log_amp, (3, 3), borderType=cv2.BORDER_REPLICATE)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = cv2.GaussianBlur(sal, (0, 0), 2.5)
    sal = cv2.resize(sal, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    lo, hi = sal.min(), sal.max()
    return (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)


def _edge_boxes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gray = cv2.GaussianBlur(_gray(frame), (3, 3), 0)
    med = float(np.median(gray))
    edges = cv2.Canny(gray, max(10.0, 0.66 * med), max(30.0, 1.33 * med))
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [cv2.boundingRect(c) for c in contours]
    b = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], np.float32).reshape(-1, 4)
    return b, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _saliency_boxes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sal = spectral_residual_saliency(frame)
    mask = (sal > min(0.999, 3 * sal.mean())).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sums = np.bincount(labels.ravel(), weights=sal.ravel(), minlength=n)
    rows = [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:]]
    return np.array(rows, np.float32).reshape(-1, 4), sums[1:].astype(np.float32)


def propose(frame: np.ndarray, method: str = "edges", cfg: TrackerConfig | None = None) -> np.ndarray:
    """Up to ``cfg.top_k`` region proposals ``(K, 4)`` (x0, y0, x1, y1, native pixels) of an RGB frame, best
    first (see the module docstring for the two methods and the filters)."""
    cfg = cfg or TrackerConfig()
    if method == "edges":
        boxes, scores = _edge_boxes(frame)
    elif method == "saliency":
        boxes, scores = _saliency_boxes(frame)
    else:
        raise ValueError(f"unknown proposal method {method!r}: use one of {', '.join(PROPOSAL_METHODS)}")
    h, w = frame.shape[:2]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = (np.minimum(bw, bh) >= cfg.min_side) & (bw * bh <= MAX_AREA * h * w)
    ok &= np.maximum(bw, bh) <= MAX_ASPECT * np.maximum(np.minimum(bw, bh), 1e-6)
    boxes, scores = boxes[ok], scores[ok]
    return boxes[nms(boxes, scores, 0.5, cfg.top_k)]


def farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)`` (dx, dy) from ``prev`` to ``nxt`` (gray uint8) with OpenCV's Farnebäck
    (pyramid scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2)."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _step(
    box: np.ndarray, fwd: np.ndarray, bwd: np.ndarray | None, cfg: TrackerConfig
) -> tuple[np.ndarray, float]:
    """One frame of propagation for one box (in flow pixels): the new box and its consistent fraction."""
    h, w = fwd.shape[:2]
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, w)), int(np.clip(np.ceil(box[3]), y0 + 1, h))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    d = fwd[y0:y1, x0:x1].reshape(-1, 2).astype(np.float64)
    p = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    good = np.ones(len(p), bool)
    if bwd is not None:
        q = p + d
        qx = np.clip(np.round(q[:, 0]).astype(int), 0, w - 1)
        qy = np.clip(np.round(q[:, 1]).astype(int), 0, h - 1)
        good = np.linalg.norm(d + bwd[qy, qx], axis=1) < cfg.fb_error
    frac = float(good.mean())
    if not good.any():
        return box, 0.0
    p, d = p[good], d[good]
    shift = np.median(d, axis=0)
    c, c2 = p.mean(0), (p + d).mean(0)
    den = ((p - c) ** 2).sum()
    scale = float(((p + d - c2) * (p - c)).sum() / den) if den > 0 else 1.0
    scale = float(np.clip(scale, 0.8, 1.25))
    cx, cy = (box[0] + box[2]) / 2 + shift[0], (box[1] + box[3]) / 2 + shift[1]
    hw, hh = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh]), frac


def track_boxes(
    frames: list[np.ndarray], boxes: np.ndarray, cfg: TrackerConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Follow ``boxes`` ``(K, 4)`` of ``frames[0]`` through ``frames[1:]``.

    Returns ``(trajectory (T, K, 4) float32 in native pixels, alive (T, K) bool)``; a track that the lost-track
    filter drops keeps its last box and is never revived.
    """
    cfg = cfg or TrackerConfig()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n, k = len(frames), len(boxes)
    h, w = frames[0].shape[:2]
    s = min(1.0, cfg.max_side / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    grays = [
        _gray(f) if s == 1.0 else cv2.resize(_gray(f), size, interpolation=cv2.INTER_AREA) for f in frames
    ]
    traj = np.zeros((n, k, 4), np.float64)
    alive = np.zeros((n, k), bool)
    traj[0], alive[0] = boxes, True
    cur = boxes * s
    for t in range(1, n):
        alive[t] = alive[t - 1]
        if not alive[t].any():
            traj[t] = traj[t - 1]
            continue
        fwd = farneback(grays[t - 1], grays[t])
        bwd = farneback(grays[t], grays[t - 1]) if cfg.fb_error > 0 else None
        for j in np.flatnonzero(alive[t]):
            cur[j], frac = _step(cur[j], fwd, bwd, cfg)
            if bwd is not None and frac < cfg.min_consistent:
                alive[t, j] = False
        traj[t] = cur / s
        side = np.minimum(traj[t, :, 2] - traj[t, :, 0], traj[t, :, 3] - traj[t, :, 1])
        alive[t] &= (inside_fraction(traj[t], h, w) >= cfg.min_inside) & (side >= cfg.min_side)
        # a dropped track keeps the box it had when it was last alive
        dropped = alive[t - 1] & ~alive[t]
        traj[t, dropped] = traj[t - 1, dropped]
        cur[dropped] = traj[t - 1, dropped] * s
    return traj.astype(np.float32), alive
