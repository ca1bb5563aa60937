"""MoCo v2 (He et al. 2020; Chen et al. 2020), as PAPERS.md §2.2.1 describes the official code.

Per step, for a batch of images:

1. two MoCo v2 views ``x_q``, ``x_k`` of each image;
2. query ``q = normalize(g_q(f_q(x_q)))`` with the backbone ``f_q`` and MLP head ``g_q``, trained by SGD;
3. key ``k = normalize(g_k(f_k(x_k)))`` with the momentum copies (no gradient), the key batch shuffled across
   ranks before the forward and unshuffled after (shuffling BN, §3.3 of MoCo);
4. ``l_pos = q·k`` ``(B, 1)``, ``l_neg = q·U^T`` ``(B, K)`` against the queue U, ``logits = [l_pos, l_neg] / τ``
   and ``loss = cross_entropy(logits, 0)``, i.e.

       L = −(1/B) Σ_b log [ exp(q_b·k_b/τ) / ( exp(q_b·k_b/τ) + Σ_n exp(q_b·u_n/τ) ) ];

5. the keys of every rank are gathered and enqueued, overwriting the oldest;
6. after the optimiser step, ``θ_k ← m θ_k + (1 − m) θ_q`` (:meth:`Method.on_after_optimizer_step`).

The official code does step 6 at the start of the next forward; both use θ_q after the same optimiser step,
so the keys are identical. Defaults: τ = 0.2, K = 65536, m = 0.999, 128-d output, random-unit initial queue.

P2's options (multi-crop with constrained crops, AutoAugment, nearest-neighbour positives; ``multicrop_n``,
``autoaugment_p``, ``nn_topk``) switch the step to :func:`invarlab.methods.moco_p2.p2_step`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.distributed import (
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    convert_to_split_bn,
    shuffle_bn_active,
)
from invarlab.methods.base import Method, MethodConfig, StepOutput
from invarlab.methods.moco_p2 import multicrop_config, p2_enabled, p2_step
from invarlab.nets.heads import ProjectionHead
from invarlab.nets.momentum import momentum_copy
from invarlab.queue import FeatureQueue

__all__ = ["MoCo", "moco_logits", "moco_loss"]


def moco_logits(q: Tensor, k: Tensor, queue: Tensor) -> tuple[Tensor, Tensor]:
    """MoCo's unscaled logits: ``l_pos = q·k`` ``(B, 1)`` and ``l_neg = q·U^T`` ``(B, K)`` for L2-normalised
    queries ``q`` ``(B, D)``, keys ``k`` ``(B, D)`` and queue ``U`` ``(K, D)``."""
    # float32 logits also under bf16/fp16 autocast: with K = 65536 negatives, dividing rounded logits by
    # tau = 0.2 would blur the softmax the loss depends on.
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, queue = q.to(dtype), k.to(dtype), queue.to(dtype)
    with torch.autocast(q.device.type, enabled=False):
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,kc->nk", q, queue)
    return l_pos, l_neg


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``cross_entropy([l_pos, l_neg] / τ, 0)``: the positive key is class 0 of a (1 + K)-way classification.
    Returns ``(loss, logits)``; equal to :func:`invarlab.losses.info_nce` ``(q, k, queue, τ)``."""
    l_pos, l_neg = moco_logits(q, k, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels), logits


class MoCo(Method):
    """MoCo v2: query encoder (``backbone`` + ``head``), momentum key encoder (``backbone_momentum`` +
    ``head_momentum``), and a queue of K keys (``queue``, with labels beside them when the data has labels).

    ``cfg.bn_splits > 1`` computes BatchNorm2d statistics per split of the batch in both encoders (per-GPU BN
    emulated in one process) and, with ``cfg.shuffle_bn``, shuffles the key batch so that a key's statistics
    come from other images than its query's. ``cfg.symmetric`` adds the loss with the views' roles swapped.
    """

    name = "moco"
    default_views = "mocov2"

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        super().__init__(cfg)
        d = self.backbone.feature_dim
        self.temperature = cfg.temperature
        self.head = ProjectionHead(
            d, cfg.proj_dim, cfg.proj_hidden_dim, num_layers=cfg.proj_layers, batch_norm=cfg.proj_batch_norm
        )
        convert_to_split_bn(self.backbone, cfg.bn_splits)
        # Copied after the BN conversion so the key encoder normalises per split too, and starts as θ_k = θ_q.
        self.backbone_momentum = momentum_copy(self.backbone)
        self.head_momentum = momentum_copy(self.head)
        self.queue = FeatureQueue(cfg.queue_size, cfg.proj_dim, with_labels=True, init=cfg.queue_init)
        self._momentum = cfg.momentum
        self.p2 = p2_enabled(cfg)
        if self.p2:
            self.multicrop = multicrop_config(cfg, self.view_config)
        if cfg.nn_topk > 0:
            # Backbone features of the same keys, row for row beside `queue` (P2's nearest-neighbour search).
            self.queue_backbone = FeatureQueue(cfg.queue_size, d, init=cfg.queue_init)
            # Completed optimiser steps and the run's total, for the NN warm-up; buffers, so a resume has them.
            self.register_buffer("nn_steps", torch.zeros(2, dtype=torch.long))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.head, self.head_momentum)]

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        self._momentum = self.momentum_at(step, total_steps)
        super().on_after_optimizer_step(step, total_steps)
        if self.cfg.nn_topk > 0:
            self.nn_steps.copy_(torch.tensor([step + 1, total_steps]))

    def encode_query(self, x: Tensor) -> Tensor:
        """``q = normalize(g_q(f_q(x)))``, with gradient."""
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def encode_key(
        self, x: Tensor, generator: torch.Generator | None = None, with_features: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``k = normalize(g_k(f_k(x)))`` with shuffling BN; rows come back in the order of ``x``. With
        ``with_features``, also the normalised backbone features ``normalize(f_k(x))``: ``(k, h)``."""
        # In one process with plain BN a permutation cannot change the statistics, so skip its two copies.
        shuffle = shuffle_bn_active(self.cfg.shuffle_bn, self.cfg.bn_splits)
        if shuffle:
            x, idx_unshuffle = batch_shuffle(x, generator)
        h = self.backbone_momentum(x)
        out = [F.normalize(self.head_momentum(h), dim=1)]
        if with_features:
            out.append(F.normalize(h.float(), dim=1))
        if shuffle:
            out = [batch_unshuffle(t, idx_unshuffle) for t in out]
        return (out[0], out[1]) if with_features else out[0]

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        if self.p2:
            return p2_step(self, images, labels, generator)
        im_q, im_k = self.make_views(images, generator, 2)
        q = self.encode_query(im_q)
        k = self.encode_key(im_k, generator)
        # Cloned because enqueue() below writes into the buffer before backward() needs it for dL/dq.
        negatives = self.queue.features.clone()
        loss, logits = moco_loss(q, k, negatives, self.temperature)
        if self.cfg.symmetric:
            q2 = self.encode_query(im_k)
            k2 = self.encode_key(im_q, generator)
            loss2, logits2 = moco_loss(q2, k2, negatives, self.temperature)
            loss = (loss + loss2) / 2
            logits = torch.cat([logits, logits2])
        # Only the keys of the second view are enqueued, also when symmetric, so a queue of K holds K / B
        # steps of history as in the asymmetric recipe.
        gathered_labels = concat_all_gather(labels.to(k.device)) if labels is not None else None
        self.queue.enqueue(concat_all_gather(k), gathered_labels)
        return StepOutput(loss, self._metrics(loss, logits))

    @torch.no_grad()
    def _metrics(self, loss: Tensor, logits: Tensor) -> dict[str, float]:
        t = self.temperature
        acc = (logits.argmax(dim=1) == 0).float().mean()
        l_pos = logits[:, 0].mean() * t
        l_neg = logits[:, 1:].mean() * t if logits.shape[1] > 1 else torch.zeros_like(l_pos)
        fill = self.queue.count.to(loss.device, torch.float32) / self.queue.size
        # One stacked transfer: a single host synchronisation per step instead of one per metric.
        values = torch.stack([loss.detach().float(), acc, l_pos.float(), l_neg.float(), fill]).tolist()
        out = dict(zip(("loss", "acc_pos", "l_pos", "l_neg", "queue_fill"), values, strict=True))
        out["momentum"] = float(self._momentum)
        return out
