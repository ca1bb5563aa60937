"""The online kNN monitor: weighted k-nearest-neighbour accuracy of the current features on held-out images.

Weighted kNN (Wu et al. 2018, as in the MoCo CIFAR demo, lightly and solo-learn): with L2-normalised features,
a test image's similarity to bank image ``j`` is ``s_j = <f, f_j>``; among its ``k`` most similar bank images
the class score is ``score_c = sum_j exp(s_j / T) [y_j = c]`` and the prediction is ``argmax_c score_c``.

It only reads the model (eval mode, no gradients, no random numbers), so running it never changes training.
Kept here rather than imported from the evaluation stage, which must not depend on training code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.data.collate import collate_uint8
from invarlab.views.ops import normalize, to_float

__all__ = ["extract_features", "knn_predict"]


@torch.no_grad()
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
    module docstring). Features are L2-normalised here; ``k`` is capped at ``N``; ties go to the lower class."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start : start + chunk] @ bank.T  # (q, N)
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        scores.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(scores.argmax(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=queries.device)


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
