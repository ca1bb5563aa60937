"""Supervised baseline: cross-entropy of a linear classifier on the backbone's pooled features.

Per step: one augmented view ``x`` per image (RandomResizedCrop (0.08, 1) + flip by default), logits
``W f(x) + b`` and

    L = −(1/B) Σ_b log softmax(W f(x_b) + b)_{y_b}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.distributed import convert_to_split_bn
from invarlab.errors import ConfigError, DataError
from invarlab.methods.base import Method, MethodConfig, StepOutput

__all__ = ["Supervised"]


class Supervised(Method):
    """``backbone`` + ``classifier`` (one ``nn.Linear(D, num_classes)``); labels are required."""

    name = "supervised"
    default_views = "supervised"

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        if num_classes is None or num_classes < 2:
            raise ConfigError(
                f"method 'supervised' needs the number of classes (>= 2), got {num_classes}: "
                "train on a labelled dataset, or pick a self-supervised method (moco, simclr)"
            )
        super().__init__(cfg)
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(self.backbone.feature_dim, self.num_classes)
        convert_to_split_bn(self.backbone, cfg.bn_splits)

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        if labels is None:
            raise DataError(
                "method 'supervised' needs class labels, but the batch has none: use a labelled dataset "
                "(or a self-supervised method such as moco or simclr)"
            )
        (x,) = self.make_views(images, generator, 1)
        labels = labels.to(device=x.device, dtype=torch.long)
        if labels.shape != (x.shape[0],):
            raise DataError(f"labels must be ({x.shape[0]},) class indices, got shape {tuple(labels.shape)}")
        # Checked here because an out-of-range target is an opaque IndexError on CPU and a device assert on GPU.
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            lo, hi = int(labels.min()), int(labels.max())
            raise DataError(
                f"labels must lie in [0, {self.num_classes - 1}] for {self.num_classes} classes, got [{lo}, {hi}]"
            )
        logits = self.classifier(self.backbone(x))
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean()
            values = torch.stack([loss.detach().float(), acc]).tolist()
        return StepOutput(loss, dict(zip(("loss", "acc"), values, strict=True)))
