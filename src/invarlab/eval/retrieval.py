"""Semantic segment retrieval without finetuning (PAPERS.md §2.4.3; MaskContrast's protocol, used by P2).

1. Every image gives pixel embeddings ``e(x)`` (the backbone's dense map, bilinearly upsampled to the mask's
   resolution) and one or more masks ``s(x)`` in [0, 1] (ground truth, or a saliency estimate).
2. Prototype of a mask: ``p = normalize(Σ_x e(x) s(x) 1[s(x) > 0.5])``.
3. Memory bank: the prototypes of the ``train`` images, each labelled with the majority ground-truth class
   among its mask's pixels (background and ignore pixels do not vote; a mask with no other pixel is skipped).
4. Each ``val`` mask takes the class of its nearest bank prototype (cosine, argmax); its pixels get that class,
   every other pixel background.
5. mIoU over the classes (``iou = TP / (TP + FP + FN)`` summed over the val set), and optionally over a subset
   of them (VOC's 7 classes) where ground-truth pixels of the other non-background classes are ignored, the
   bank keeps only prototypes of the subset and the mean runs over the subset alone.

Upsampling is never materialised: with ``U = U_y ⊗ U_x`` the bilinear upsampling (``align_corners=False``),
``Σ_x (U e)(x) w(x) = Σ_p e(p) (Uᵀ w)(p)``, and ``Uᵀ w = U_yᵀ w U_x`` is a small ``(h, w)`` map.

Saliency (``boundary_saliency``): a training-free estimate from the features themselves, the *boundary
prior* (Wei et al., ECCV 2012: image borders are mostly background): ``s(p) = 1 − cos(e(p), ē_border)`` with
``ē_border`` the mean embedding of the map's outermost ring, min-max scaled to [0, 1] per image and upsampled
bilinearly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.eval.dense import IGNORE_INDEX, confusion_matrix, miou_summary, upsample

__all__ = [
    "VOC_RETRIEVAL_CLASSES",
    "boundary_saliency",
    "interp_matrix",
    "majority_class",
    "mask_prototypes",
    "paint",
    "pool_weights",
    "segment_retrieval",
]

# MaskContrast's 7-class subset of VOC (class indices of SegmentationClass).
VOC_RETRIEVAL_CLASSES = {"bus": 6, "aeroplane": 1, "car": 7, "person": 15, "cat": 8, "cow": 10, "bottle": 5}


def interp_matrix(n_out: int, n_in: int, device: torch.device | str = "cpu") -> Tensor:
    """``(n_out, n_in)``: the 1-D linear interpolation (``align_corners=False``) from ``n_in`` to ``n_out``
    samples as a matrix, i.e. ``F.interpolate`` applied to each basis vector."""
    eye = torch.eye(n_in, device=device).unsqueeze(0)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T


def pool_weights(weights: Tensor, size: Sequence[int]) -> Tensor:
    """``Uᵀ w`` for weights ``(S, H, W)`` and a map of ``size = (h, w)``: ``Σ_p e(p) (Uᵀ w)(p)`` equals
    ``Σ_x (U e)(x) w(x)`` with ``U`` the bilinear upsampling from ``(h, w)`` to ``(H, W)``."""
    H, W = weights.shape[-2:]
    uy = interp_matrix(H, size[0], weights.device)
    ux = interp_matrix(W, size[1], weights.device)
    return torch.einsum("yi,syx,xj->sij", uy, weights.float(), ux)


def mask_prototypes(feats: Tensor, weights: Tensor, threshold: float = 0.5) -> Tensor:
    """``(S, C)`` prototypes ``normalize(Σ_x e(x) s(x) 1[s(x) > threshold])`` of a map ``feats`` ``(C, h, w)``
    for masks ``weights`` ``(S, H, W)`` in [0, 1] (``e`` = ``feats`` upsampled bilinearly to ``(H, W)``).
    An empty mask gives a zero row."""
    w = weights.float() * (weights > threshold)
    pooled = pool_weights(w, feats.shape[-2:])
    return F.normalize(torch.einsum("sij,cij->sc", pooled, feats.float()), dim=1)


def boundary_saliency(feats: Tensor) -> Tensor:
    """``(h, w)`` saliency in [0, 1] of a map ``feats`` ``(C, h, w)`` by the boundary prior (module
    docstring): ``1 − cos(e(p), mean of the border ring)``, min-max scaled (all zeros for a constant map)."""
    e = F.normalize(feats.float(), dim=0)
    ring = torch.ones(feats.shape[-2:], dtype=torch.bool, device=feats.device)
    ring[1:-1, 1:-1] = False
    border = F.normalize(e[:, ring].mean(1), dim=0)
    s = 1 - torch.einsum("chw,c->hw", e, border)
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi - lo > 1e-8 else torch.zeros_like(s)


def majority_class(
    classes: Tensor, masks: Tensor, num_classes: int, background: int = 0, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(S,)`` the most frequent class of ``classes`` ``(H, W)`` under each mask of ``masks`` ``(S, H, W)``
    (bool), not counting ``background`` and ``ignore_index`` pixels; ties go to the lower class, and a mask
    without a counted pixel gets -1."""
    S = masks.shape[0]
    c = classes.reshape(-1).long()
    valid = (c >= 0) & (c < num_classes) & (c != background) & (c != ignore_index)
    seg, pix = masks.reshape(S, -1).nonzero(as_tuple=True)
    keep = valid[pix]
    counts = torch.bincount(seg[keep] * num_classes + c[pix[keep]], minlength=S * num_classes)
    counts = counts.view(S, num_classes)
    return torch.where(counts.sum(1) > 0, counts.argmax(1), -1)


def paint(masks: Tensor, labels: Tensor, background: int = 0) -> Tensor:
    """``(H, W)`` map: ``labels[s]`` on the pixels of ``masks[s]`` (later masks win), ``background`` elsewhere."""
    out = torch.full(masks.shape[-2:], background, dtype=torch.long, device=masks.device)
    for s in range(masks.shape[0]):
        out[masks[s]] = int(labels[s])
    return out


SegmentItem = tuple[Tensor, Tensor, Tensor]  # feats (C, h, w), mask weights (S, H, W), classes (H, W)


@torch.no_grad()
def segment_retrieval(
    train: Iterable[SegmentItem],
    val: Iterable[SegmentItem],
    class_names: Sequence[str],
    threshold: float = 0.5,
    subsets: Mapping[str, Sequence[int]] | None = None,
    background: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """The protocol of the module docstring. ``train`` and ``val`` yield ``(feats, weights, classes)`` per
    image; ``train`` is consumed first (the bank), then ``val``. ``subsets`` names class subsets scored
    besides all classes (result keys ``miou_<name>`` and ``iou_<name>``).

    Returns ``miou`` / ``iou`` / ``pixel_accuracy`` over all classes (background included), ``bank_size``,
    ``bank_skipped`` (train masks without a non-background pixel), ``val_masks`` and ``val_images``."""
    K = len(class_names)
    protos, labels, skipped = [], [], 0
    for feats, weights, classes in train:
        p = mask_prototypes(feats, weights, threshold)
        lab = majority_class(classes.to(weights.device), weights > threshold, K, background, ignore_index)
        protos.append(p[lab >= 0].cpu())
        labels.append(lab[lab >= 0].cpu())
        skipped += int((lab < 0).sum())
    bank = torch.cat(protos) if protos else torch.zeros(0, 0)
    bank_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if len(bank) == 0:
        raise ValueError("segment retrieval: no train mask covers a labelled object, so the bank is empty")
    variants: dict[str, tuple[Tensor, Tensor, Tensor | None]] = {"": (bank, bank_labels, None)}
    for name, subset in (subsets or {}).items():
        ids = torch.as_tensor(list(subset), dtype=torch.long)
        keep = torch.isin(bank_labels, ids)
        variants[name] = (bank[keep], bank_labels[keep], ids)
    confs = {name: torch.zeros(K, K, dtype=torch.long) for name in variants}
    n_masks = n_images = 0
    for feats, weights, classes in val:
        q = mask_prototypes(feats, weights, threshold).cpu()
        masks = (weights > threshold).cpu()
        classes = classes.cpu().long()
        n_masks, n_images = n_masks + len(q), n_images + 1
        for name, (b, bl, ids) in variants.items():
            pred_cls = bl[(q @ b.T).argmax(1)] if len(b) else torch.full((len(q),), background)
            pred = paint(masks, pred_cls, background)
            target = classes
            if ids is not None:  # other objects' pixels are ignored (background stays background)
                other = (classes != background) & (classes != ignore_index) & ~torch.isin(classes, ids)
                target = torch.where(other, ignore_index, classes)
            confs[name] += confusion_matrix(pred, target, K, ignore_index)
    out = miou_summary(confs[""], class_names)
    for name, subset in (subsets or {}).items():
        sub = miou_summary(confs[name], class_names, list(subset))
        out[f"miou_{name}"], out[f"iou_{name}"] = sub["miou"], sub["iou"]
    out.update(bank_size=len(bank), bank_skipped=skipped, val_masks=n_masks, val_images=n_images)
    return out


def saliency_weights(feats: Tensor, size: Sequence[int]) -> Tensor:
    """``(1, H, W)`` boundary-prior saliency of ``feats`` ``(C, h, w)`` upsampled to ``size``."""
    s = boundary_saliency(feats)
    return upsample(s[None, None], size)[0].clamp(0, 1)
