"""Dense features for the evaluations without finetuning (segment retrieval, label propagation, the
segmentation probe), and the segmentation metrics they share.

:class:`DenseNet` runs a backbone up to one stage and returns its map ``(B, C, h, w)``. ``stride_change``
picks how layer3 and layer4 keep a finer grid than the backbone was trained with:

* ``stride``: every convolution of layer3 and layer4 gets stride 1, nothing else changes (what P2's label
  propagation code does, ``net.modify()`` of videowalk: PAPERS.md §2.4.4): layer3 at layer2's resolution
  (stride 8 for the ImageNet stem), with a receptive field smaller than in training;
* ``dilation``: the strides become dilations (DeepLab; :func:`invarlab.eval.features.extract` with
  ``dilate=True``): same resolution, the trained receptive field;
* ``none``: the backbone as trained (layer3 at stride 16, layer4 at 32).

Metrics: the confusion matrix over labelled pixels, per-class IoU ``TP / (TP + FP + FN)`` from it (summed
over the whole dataset, not averaged per image), and the mean over classes that occur (a class absent from
both prediction and ground truth has no IoU and is left out of the mean).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.eval.features import Encoder, _dilated, _prepare
from invarlab.views.ops import to_float

__all__ = [
    "DENSE_LAYERS",
    "IGNORE_INDEX",
    "STRIDE_CHANGES",
    "DenseNet",
    "confusion_matrix",
    "iou_per_class",
    "miou_summary",
]

DENSE_LAYERS = ("layer2", "layer3", "layer4")
STRIDE_CHANGES = ("stride", "dilation", "none")
IGNORE_INDEX = 255


def _stride_one(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` whose layer3 and layer4 convolutions all have stride 1 (no dilation)."""
    net = copy.deepcopy(backbone)
    for name in ("layer3", "layer4"):
        for m in getattr(net, name).modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    return net


class DenseNet:
    """``images uint8 (B, 3, H, W) -> dense map (B, C, h, w)`` float32 on ``device`` at stage ``layer``.

    Images are scaled to [0, 1], resized to ``image_size`` square when given (else kept), ImageNet-normalised
    and run with every module in eval mode, as for pooled features."""

    def __init__(
        self,
        encoder: Encoder,
        layer: str = "layer3",
        stride_change: str = "stride",
        image_size: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if layer not in DENSE_LAYERS:
            raise ValueError(f"unknown dense layer {layer!r}: use one of {', '.join(DENSE_LAYERS)}")
        if stride_change not in STRIDE_CHANGES:
            raise ValueError(f"unknown stride_change {stride_change!r}: use {', '.join(STRIDE_CHANGES)}")
        backbone = encoder.backbone
        if stride_change == "dilation":
            backbone = _dilated(backbone)
        elif stride_change == "stride":
            backbone = _stride_one(backbone)
        self.net = backbone.to(device).eval()
        self.layer, self.image_size, self.device = layer, image_size, torch.device(device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = _prepare(to_float(images.to(self.device)), self.image_size, None)
        return self.net.feature_maps(x, (self.layer,))[self.layer].float()


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(K, K)`` int64 counts, row = true class, column = predicted class, over pixels whose target is in
    ``0..K-1`` (``ignore_index`` and anything else out of range is left out)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes) & (t != ignore_index)
    p = p.clamp(0, num_classes - 1)  # a stray prediction (e.g. 255) is still a wrong one, never dropped
    counts = torch.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).cpu()


def iou_per_class(conf: Tensor) -> Tensor:
    """``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` per class (float64), ``nan`` where the denominator is 0."""
    conf = conf.double()
    tp = conf.diagonal()
    denom = conf.sum(0) + conf.sum(1) - tp
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))


def miou_summary(
    conf: Tensor, class_names: Sequence[str], classes: Sequence[int] | None = None
) -> dict[str, Any]:
    """``{"miou": %, "iou": {name: %}, "pixel_accuracy": %}``; the mean is over ``classes`` (default all)
    whose IoU is defined."""
    iou = iou_per_class(conf) * 100
    chosen = list(range(len(class_names))) if classes is None else list(classes)
    sub = iou[chosen]
    defined = sub[~sub.isnan()]
    total = conf.sum()
    return {
        "miou": float(defined.mean()) if len(defined) else float("nan"),
        "iou": {class_names[c]: float(iou[c]) for c in chosen},
        "pixel_accuracy": float(conf.diagonal().sum() / total * 100) if total > 0 else float("nan"),
    }


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of ``(B, C, h, w)`` maps to ``size`` (``align_corners=False``)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
