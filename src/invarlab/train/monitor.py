"""The online kNN monitor: weighted k-nearest-neighbour accuracy of the current features on held-out images.

Weighted kNN (Wu et al. 2018, as in the MoCo CIFAR demo, lightly and solo-learn): with L2-normalised features,
a test image's similarity to bank image ``j`` is ``s_j = <f, f_j>``; among its ``k`` most similar bank images
the class score is ``score_c = sum_j exp(s_j / T) [y_j = c]`` and the prediction is ``argmax_c score_c``.

It only reads the model (eval mode, no gradients, no random numbers), so running it never changes training.
The kNN rule itself lives in the evaluation stage (training may import evaluation code, not the reverse).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.data.collate import collate_uint8
from invarlab.eval.knn import knn_classify
from invarlab.views.ops import normalize, to_float

__all__ = ["extract_features", "knn_predict"]


def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Predicted labels ``(Q,)`` of ``queries`` ``(Q, D)`` by weighted kNN over ``bank`` ``(N, D)`` (see the
    module docstring): :func:`invarlab.eval.knn.knn_classify`, the one implementation. Features are
    L2-normalised there; ``k`` is capped at ``N``; ties go to the lower class. An empty bank predicts class 0
    (the monitor must not stop training)."""
    if bank.shape[0] == 0:
        return torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    return knn_classify(bank, bank_labels, queries, k, temperature, num_classes=num_classes, chunk=chunk)


@torch.no_grad()
def extract_features(
    method: Any,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    autocast: Any = contextlib.nullcontext,
    channels_last: bool = False,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(features (N, D) float32 on the CPU, labels (N,))`` of ``method.features`` on ImageNet-normalised
    images, with every module in eval mode (restored afterwards)."""
    modules = [m for m in method.modules() if isinstance(m, nn.Module)]
    was_training = [m.training for m in modules]
    method.eval()
    feats, labels = [], []
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_uint8, num_workers=num_workers
    )
    try:
        for images, y, _ in loader:
            x = normalize(to_float(images.to(device, non_blocking=True)))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                f = method.features(x)
            feats.append(f.float().cpu())
            labels.append(y)
    finally:
        for m, t in zip(modules, was_training, strict=True):
            m.training = t
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)
