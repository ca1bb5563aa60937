"""Learning-rate scaling and the linear warm-up + cosine schedule.

Linear scaling (Goyal et al. 2017): ``lr = base_lr * B / 256`` for a global batch of ``B`` images.

Schedule, for the update made at step ``t = 0, 1, ..., T - 1`` with ``W`` warm-up steps, peak ``lr`` and final
``lr_min = min_lr_ratio * lr``::

    lr(t) = lr * (t + 1) / W                                           t < W
    lr(t) = lr_min + (lr - lr_min) * (1 + cos(pi * (t - W) / (T - W))) / 2     W <= t < T   (cosine)
    lr(t) = lr                                                           W <= t        (constant)

The warm-up starts at ``lr / W`` rather than 0 (an update with lr 0 is a wasted step) and reaches ``lr`` at
``t = W - 1``; the cosine starts at ``lr`` at ``t = W`` and would reach ``lr_min`` at ``t = T``, one step after
the last update. The schedule is a pure function of ``t``, so resuming needs only the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["WarmupCosine", "scaled_lr"]


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """``base_lr * batch_size / reference`` (the linear scaling rule)."""
    return base_lr * batch_size / reference


class WarmupCosine:
    """``lr(t)`` of the module docstring; :meth:`apply` writes it into optimiser parameter groups.

    A group may carry ``lr_scale`` (e.g. a predictor trained at 10x); its lr is then ``lr(t) * lr_scale``.
    """

    def __init__(
        self,
        peak_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        cosine: bool = True,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.min_lr = float(min_lr_ratio) * self.peak_lr
        self.cosine = cosine

    def __call__(self, step: int) -> float:
        t, W, T = step, self.warmup_steps, self.total_steps
        if t < W:
            return self.peak_lr * (t + 1) / W
        if not self.cosine or T == W:
            return self.peak_lr
        progress = min(t - W, T - W) / (T - W)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, param_groups: Iterable[dict[str, Any]], step: int) -> float:
        """Set every group's ``lr`` for the update at ``step``; returns the unscaled ``lr(step)``."""
        lr = self(step)
        for group in param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr": self.min_lr,
            "cosine": self.cosine,
        }
