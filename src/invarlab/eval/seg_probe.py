"""Linear segmentation probe on frozen dense features: a per-pixel linear classifier, scored by mIoU.

Training pixels are the cells of the dense map ``(C, h, w)``; each cell takes the ground-truth class at its
centre pixel (nearest-exact downsampling of the class map), cells on ignore pixels (255) are dropped, and at
most ``pixels_per_image`` random cells per image are kept (seeded). The classifier is the multinomial logistic
regression of :mod:`invarlab.eval.linear` (features standardised with the training pixels' statistics,
L-BFGS, weight decay ``λ``):

    J(W, b) = (1/n) Σ_i −log softmax(x̃_i W + b)_{y_i} + (λ/2) ‖W‖²_F

At test time its logits ``(K, h, w)`` are upsampled bilinearly to the image's resolution and the argmax is
scored against the full-resolution ground truth: mIoU over the classes (dataset-level IoU, see
:mod:`invarlab.eval.dense`). Being linear, upsampling the logits equals classifying bilinearly upsampled
features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.eval.dense import IGNORE_INDEX, confusion_matrix, miou_summary, upsample
from invarlab.eval.linear import LogisticModel, fit_logistic

__all__ = ["cell_labels", "predict_classes", "sample_pixels", "seg_probe"]


def cell_labels(classes: Tensor, size: Sequence[int]) -> Tensor:
    """``(h, w)`` class of each map cell: the class map ``(H, W)`` at the cell's centre pixel."""
    x = classes.float()[None, None]
    return F.interpolate(x, size=tuple(size), mode="nearest-exact")[0, 0].long()


def sample_pixels(
    feats: Tensor,
    classes: Tensor,
    count: int,
    generator: torch.Generator,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """``(x (n, C), y (n,))``: up to ``count`` random labelled cells of a map ``feats`` ``(C, h, w)`` (all of
    them when ``count`` is 0 or larger than their number)."""
    y = cell_labels(classes, feats.shape[-2:]).reshape(-1).cpu()
    keep = ((y >= 0) & (y < num_classes) & (y != ignore_index)).nonzero().squeeze(1)
    if count and len(keep) > count:
        keep = keep[torch.randperm(len(keep), generator=generator)[:count]].sort().values
    x = feats.reshape(feats.shape[0], -1).T[keep.to(feats.device)]
    return x.cpu(), y[keep]


@torch.no_grad()
def predict_classes(model: LogisticModel, feats: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, H, W)`` classes of maps ``(B, C, h, w)``: logits per cell, upsampled bilinearly, argmax."""
    B, C, h, w = feats.shape
    x = feats.permute(0, 2, 3, 1).reshape(-1, C).to(model.weight.device)
    logits = model.scores(x).view(B, h, w, -1).permute(0, 3, 1, 2)
    return upsample(logits, size).argmax(1)


def seg_probe(
    train: Iterable[tuple[Tensor, Tensor]],
    val: Iterable[tuple[Tensor, Tensor]],
    class_names: Sequence[str],
    pixels_per_image: int = 0,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_iter: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train on ``(feats (C, h, w), classes (H, W))`` of ``train``, score on those of ``val``: ``miou``,
    ``iou`` per class, ``pixel_accuracy`` (percent), ``train_pixels``, ``val_images``."""
    K = len(class_names)
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for feats, classes in train:
        x, y = sample_pixels(feats, classes, pixels_per_image, g, K)
        xs.append(x)
        ys.append(y)
    if not xs or sum(len(y) for y in ys) == 0:
        raise ValueError("segmentation probe: no labelled training pixel")
    x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
    model = fit_logistic(x, y, K, weight_decay, max_iter=max_iter)
    conf = torch.zeros(K, K, dtype=torch.long)
    n_val = 0
    for feats, classes in val:
        pred = predict_classes(model, feats[None], classes.shape[-2:])[0]
        conf += confusion_matrix(pred.cpu(), classes.cpu(), K)
        n_val += 1
    out = miou_summary(conf, class_names)
    out.update(train_pixels=len(y), val_images=n_val, weight_decay=weight_decay)
    return out
