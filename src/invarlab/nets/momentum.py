"""Momentum (exponential moving average) copies of a network: MoCo's key encoder, BYOL's target network.

The update is, for every parameter,

    θ_k ← m θ_k + (1 − m) θ_q

with θ_q the online (query) parameters trained by gradient descent and θ_k the momentum (key / target) copy,
which never receives gradients. MoCo uses a constant ``m = 0.999`` (0.995 in P2's multi-crop runs); BYOL raises
m from ``m0`` to 1 along a cosine (:func:`cosine_momentum`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

MOCO_MOMENTUM = 0.999
BUFFER_MODES = ("copy", "ema", "keep")


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` everywhere, to be updated only by :func:`update_momentum`.

    The copy keeps the source's train/eval mode: MoCo runs its key encoder in train mode, so BatchNorm uses the
    key batch's statistics, as the official code does.
    """
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float, buffers: str = "copy") -> None:
    """In place on ``target``: ``θ_k ← m θ_k + (1 − m) θ_q`` for every parameter (matched by name).

    Buffers (BatchNorm running mean / var / count) are not trained, so averaging them is a choice:
    ``"copy"`` (default) sets the target's to the online network's, so an eval-mode target normalises like the
    online one; ``"ema"`` averages floating buffers with the same m (integer ones are copied); ``"keep"`` leaves
    them alone (the official MoCo code: the key encoder's own running stats from its train-mode forwards).
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
    q_params = dict(online.named_parameters())
    k_params = dict(target.named_parameters())
    if q_params.keys() != k_params.keys():
        diff = sorted(q_params.keys() ^ k_params.keys())
        raise ValueError(f"online and target networks differ in parameters: {diff[:5]}")
    names = list(q_params)
    tk = [k_params[n] for n in names]
    tq = [q_params[n].detach() for n in names]
    if tk:
        # One fused kernel per list instead of two per tensor: hundreds of tensors per step on a ResNet-50.
        torch._foreach_mul_(tk, m)
        torch._foreach_add_(tk, tq, alpha=1.0 - m)
    if buffers == "keep":
        return
    q_bufs = dict(online.named_buffers())
    for name, buf in target.named_buffers():
        src = q_bufs.get(name)
        if src is None:
            continue
        if buffers == "ema" and buf.is_floating_point():
            buf.mul_(m).add_(src, alpha=1.0 - m)
        else:
            buf.copy_(src)


# The verb as the brief of this module names it: ``momentum.update(online, target, m)``.
update = update_momentum


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule: ``m(k) = final − (final − base) · (cos(π k / K) + 1) / 2``.

    With ``final = 1`` this is ``m = 1 − (1 − m0)(cos(π k / K) + 1) / 2``: ``m0`` at step 0, 1 at step K.
    ``step`` is clamped to ``[0, K]``; use a constant :data:`MOCO_MOMENTUM` for MoCo.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    k = min(max(step, 0), total_steps)
    return final - (final - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0
