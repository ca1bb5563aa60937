"""Projection heads: the small MLPs that map backbone features to the space where the contrastive loss lives.

A head is an ``nn.Sequential`` so its state-dict keys are bare layer indices. That is on purpose: the MoCo v2
head ``Linear(D, D) - ReLU - Linear(D, 128)`` then has keys ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``,
exactly the suffixes of the official checkpoint's ``encoder_q.fc.0.*`` / ``encoder_q.fc.2.*``, and loads from it
without a renaming table. Heads return raw vectors; the method L2-normalises them where its loss needs it.
"""

from __future__ import annotations

from torch import nn

from invarlab.errors import ConfigError

HEAD_KINDS = ("mocov2", "simclr", "linear")


class ProjectionHead(nn.Sequential):
    """``num_layers`` linear layers with ReLU between them:
    ``h = W_L relu(... relu(W_1 x + b_1) ...) + b_L``, every hidden layer of width ``hidden_dim``.

    With ``batch_norm=True`` each hidden Linear drops its bias and is followed by ``BatchNorm1d`` (SimCLR style:
    the BN shift makes the bias redundant). ``last_bn=True`` adds an affine-free ``BatchNorm1d`` on the output
    (SimCLR v2 / MoCo v3 style). ``num_layers=1`` is a plain linear map.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 128,
        hidden_dim: int | None = None,
        *,
        num_layers: int = 2,
        batch_norm: bool = False,
        last_bn: bool = False,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"a projection head needs num_layers >= 1 (got {num_layers})")
        if min(in_dim, out_dim) < 1 or (hidden_dim is not None and hidden_dim < 1):
            raise ConfigError(f"head dims must be >= 1 (got in={in_dim}, hidden={hidden_dim}, out={out_dim})")
        # Default hidden width = input width: MoCo v2's 2048-2048-128 scaled to whatever backbone feeds it.
        hidden = in_dim if hidden_dim is None else hidden_dim
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            mods.append(nn.Linear(d, hidden, bias=not batch_norm))
            if batch_norm:
                mods.append(nn.BatchNorm1d(hidden))
            mods.append(nn.ReLU(inplace=True))
            d = hidden
        mods.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*mods)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden_dim = hidden if num_layers > 1 else None


def moco_v2_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> ProjectionHead:
    """MoCo v2 MLP ``Linear(D, D) - ReLU - Linear(D, out_dim)`` (2048-2048-128 for ResNet-50); hidden defaults
    to ``D``. Layer indices 0 and 2 match the official checkpoint's ``encoder_q.fc.0`` and ``fc.2``."""
    return ProjectionHead(in_dim, out_dim, hidden_dim, num_layers=2)


def simclr_head(
    in_dim: int,
    out_dim: int = 128,
    hidden_dim: int | None = None,
    *,
    num_layers: int = 2,
    last_bn: bool = False,
) -> ProjectionHead:
    """SimCLR-style MLP ``Linear(D, H, no bias) - BN - ReLU - ... - Linear(H, out_dim)``."""
    return ProjectionHead(
        in_dim, out_dim, hidden_dim, num_layers=num_layers, batch_norm=True, last_bn=last_bn
    )


def linear_head(in_dim: int, out_dim: int = 128) -> ProjectionHead:
    """One ``Linear(D, out_dim)``: MoCo v1's head (the official checkpoint's ``encoder_q.fc`` without ``--mlp``)."""
    return ProjectionHead(in_dim, out_dim, num_layers=1)


def build_head(
    kind: str, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None, **kwargs: object
) -> ProjectionHead:
    """Config-facing factory: ``kind`` is ``mocov2``, ``simclr`` or ``linear``."""
    key = kind.lower().replace("-", "").replace("_", "")
    if key == "mocov2":
        return moco_v2_head(in_dim, out_dim, hidden_dim, **kwargs)  # type: ignore[arg-type]
    if key == "simclr":
        return simclr_head(in_dim, out_dim, hidden_dim, **kwargs)  # type: ignore[arg-type]
    if key == "linear":
        if hidden_dim is not None:
            raise ConfigError("a linear head has no hidden layer: drop hidden_dim or use kind 'mocov2'")
        return linear_head(in_dim, out_dim, **kwargs)  # type: ignore[arg-type]
    raise ConfigError(f"unknown head kind {kind!r}: use one of {', '.join(HEAD_KINDS)}")
