"""The standard linear evaluation protocol (MoCo's ``main_lincls.py``; InstDisc, SimCLR, MoCo and the peers'
ImageNet linear numbers): a linear classifier on the frozen backbone, trained by SGD on augmented images.

* The backbone is frozen and stays in eval mode, so neither its weights nor its BatchNorm statistics move; only
  ``fc = Linear(D, C)`` trains, initialised ``W ~ N(0, 0.01²)``, ``b = 0``.
* Training views, drawn afresh every epoch: RandomResizedCrop to the evaluation's image size (area ``scale``,
  default (0.08, 1); ratio (3/4, 4/3)) and a horizontal flip with probability ``hflip_p``; test images are
  the centre-cropped images every other evaluation reads (``Resize(256) + CenterCrop(224)`` at ImageNet scale).
* Loss: mean cross-entropy over the batch; SGD with momentum μ and weight decay λ (PyTorch's rule:
  ``g = ∇L + λW``, ``v ← μv + g``, ``W ← W − η v``; the first step has ``v = g``).
* Learning rate ``η_e`` per epoch ``e``: ``step``: ``η · 0.1^(number of milestones ≤ e)``; ``cosine``:
  ``η · ½(1 + cos(π e / E))``. MoCo's values: η = 30, μ = 0.9, λ = 0, batch 256, E = 100, milestones 60 and 80.
* Reported: top-1 / top-5 accuracy (percent) on the test set after the last epoch.

Unlike the fast probe of :mod:`invarlab.eval.linear` (L-BFGS on cached features), this runs the backbone on
every training image of every epoch: minutes on a CPU for a few thousand small images and a few epochs, GPU
hours at ImageNet scale with the defaults. One deviation from ``main_lincls.py``: the random crop is taken
from the image as the dataset decodes it (centre-cropped square for folder sets), not from the full original.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.eval.classify_config import LinearSgdConfig
from invarlab.eval.knn import topk_accuracy
from invarlab.views.ops import normalize, resized_crop, to_float
from invarlab.views.params import sample_crop_boxes

__all__ = ["LinearSgdConfig", "epoch_lr", "train_linear_sgd"]

log = logging.getLogger(__name__)


def epoch_lr(cfg: LinearSgdConfig, epoch: int) -> float:
    """``η_e`` of the module docstring for epoch ``epoch`` (0-based)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.milestones)


def _collate(batch: list[tuple[Any, ...]]) -> tuple[Tensor, Tensor]:
    return torch.stack([torch.as_tensor(b[0]) for b in batch]), torch.as_tensor([int(b[1]) for b in batch])


def _state(backbone: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def train_linear_sgd(
    backbone: nn.Module,
    train: Dataset,
    test: Dataset,
    num_classes: int,
    cfg: LinearSgdConfig,
    *,
    image_size: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
    classifier: nn.Linear | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Train ``fc`` on the frozen ``backbone`` (any module with ``forward_features``) over ``train``, then
    score ``test``; ``{"top1", "top5", "epochs", "final_lr"}``. ``classifier`` (optional) is the ``fc`` to train
    in place (default: a fresh one, initialised as the module docstring says); ``workers`` DataLoader
    processes decode images. The backbone's parameters and buffers are checked to be unchanged at the end."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    backbone.to(device).eval()
    before = _state(backbone)
    dim = int(backbone.forward_features(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1])
    if classifier is None:
        classifier = nn.Linear(dim, num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(classifier.weight, 0.0, 0.01)
        nn.init.zeros_(classifier.bias)
    fc = classifier.to(device)
    opt_ = torch.optim.SGD(fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scale = (float(cfg.scale[0]), float(cfg.scale[1]))
    for epoch in range(cfg.epochs):
        lr = epoch_lr(cfg, epoch)
        for group in opt_.param_groups:
            group["lr"] = lr
        loader = DataLoader(
            train, cfg.batch_size, shuffle=True, generator=g, collate_fn=_collate, num_workers=workers
        )
        total, count = 0.0, 0
        for images, labels in loader:
            x = to_float(images.to(device))
            boxes = sample_crop_boxes(len(x), x.shape[-2], x.shape[-1], scale, (3 / 4, 4 / 3), g)
            flip = torch.rand(len(x), generator=g) < cfg.hflip_p
            x = normalize(resized_crop(x, boxes, image_size, flip=flip.to(device)).clamp(0, 1))
            with torch.no_grad():
                feats = backbone.forward_features(x).float()
            loss = F.cross_entropy(fc(feats), labels.to(device))
            opt_.zero_grad(set_to_none=True)
            loss.backward()
            opt_.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
        log.info(
            "linear_sgd epoch %d/%d: loss %.4f, lr %.4g", epoch + 1, cfg.epochs, total / max(count, 1), lr
        )
    scores, targets = [], []
    with torch.no_grad():
        for images, labels in DataLoader(
            test, cfg.batch_size, shuffle=False, collate_fn=_collate, num_workers=workers
        ):
            x = to_float(images.to(device))
            if x.shape[-1] != image_size or x.shape[-2] != image_size:
                x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True).clamp(
                    0, 1
                )
            scores.append(fc(backbone.forward_features(normalize(x)).float()).cpu())
            targets.append(labels)
    after = backbone.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError("linear_sgd: the frozen backbone changed during training")
    out: dict[str, Any] = topk_accuracy(torch.cat(scores), torch.cat(targets))
    out.update(epochs=cfg.epochs, final_lr=lr)
    return out
