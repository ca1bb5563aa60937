"""Optimisers: SGD with momentum (torch's) and LARS (You et al. 2017, "Large Batch Training of Convolutional
Networks"), built from the method's parameter groups.

LARS, per parameter tensor ``w`` with gradient ``g``, weight decay ``wd``, momentum ``m``, trust coefficient
``eta`` and learning rate ``lr``::

    d = g + wd * w
    r = eta * ||w|| / ||d||      if ||w|| > 0 and ||d|| > 0,  else 1        (trust ratio)
    v = m * v + r * d
    w = w - lr * v

as in SimCLR / BYOL / Barlow Twins. Biases and normalisation parameters are *excluded* from the adaptation
(``r = 1``), since their norms say nothing about a sensible step size: a group with ``lars_exclude=True`` is
excluded, and a group without the key excludes its 1-D tensors (biases, BN/LN weights). Which parameters get
weight decay is the method's choice, made in its ``parameter_groups``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["LARS", "build_optimizer", "lars_trust_ratio"]


def lars_trust_ratio(weight: Tensor, update: Tensor, eta: float) -> Tensor:
    """``eta * ||w|| / ||d||``, or 1 where either norm is 0 (a fresh zero-initialised tensor, or no gradient)."""
    w_norm = torch.linalg.vector_norm(weight)
    d_norm = torch.linalg.vector_norm(update)
    one = torch.ones_like(w_norm)
    # torch.where on device avoids a host sync per tensor (no .item()).
    return torch.where((w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm, one)


class LARS(torch.optim.Optimizer):
    """LARS with momentum; see the module docstring for the update. Group keys: ``lr``, ``weight_decay``,
    ``momentum``, ``eta``, optional ``lars_exclude`` (default: exclude tensors with ``ndim <= 1``)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum <= 1 or eta < 0:
            raise ValueError(
                f"invalid LARS settings: lr={lr}, weight_decay={weight_decay}, momentum={momentum}, eta={eta}"
            )
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "eta": eta})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            exclude = group.get("lars_exclude")
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"]:
                    d = d.add(p, alpha=group["weight_decay"])
                skip = exclude if exclude is not None else p.ndim <= 1
                if not skip:
                    d = d.mul(lars_trust_ratio(p, d, group["eta"]))
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(
    name: str,
    param_groups: list[dict[str, Any]],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    eta: float = 0.001,
) -> torch.optim.Optimizer:
    """``"sgd"`` or ``"lars"`` over ``param_groups`` (each group may override ``weight_decay``; parameters
    without ``requires_grad`` are dropped, empty groups too)."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({**g, "params": params})
    if not groups:
        raise ValueError("the method has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta)
    raise ValueError(f"unknown optimiser {name!r}: use sgd or lars")
