"""LooC's representations as evaluation representations (PAPERS.md §3.5): the backbone ``V``, every embedding
space ``Z_i`` and the LooC++ concatenation, each usable wherever ``model`` / ``random`` are.

A LooC training checkpoint stores the heads as ``method_state["heads.<i>.*"]`` and the method config under
``config.method``; both are read here, without importing the training code. Names (as they appear in
``results.json``):

* ``model``: ``V``, the backbone feature (the LooC representation);
* ``z0``: ``Z_0``, invariant to every augmentation;
* ``z_<aug>``: ``Z_i``, invariant to every augmentation but ``looc_augs[i - 1]`` (``z_colour``, ``z_rotation``,
  ``z_texture``); ``z1`` .. ``zn`` and ``z_color`` are accepted as aliases;
* ``looc++``: ``cat([V]?, Z_0, Z_1, ..., Z_n)``.

Each space is read at ``layer`` (LooC's ``looc_plus_layer`` unless the evaluation config says otherwise):

    hidden:  Z_i = ReLU(W_i^(1) v + b_i^(1))        (the head's first hidden layer, after its BatchNorm if any)
    output:  Z_i = h_i(v) / ‖h_i(v)‖₂               (the L2-normalised head output, where the loss lives)

which is exactly what :meth:`invarlab.methods.LooC.representations` computes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.errors import CheckpointError, ConfigError
from invarlab.eval.features import Encoder, head_from_state_dict, heads_state, latest_checkpoint
from invarlab.nets.checkpoints import read_checkpoint

__all__ = [
    "LOOC_PLUS",
    "LoocHeads",
    "SpaceHead",
    "canonical_space",
    "is_space",
    "load_looc_heads",
    "space_encoder",
    "space_features",
    "space_names",
]

LOOC_PLUS = "looc++"
_ALIASES = {"color": "colour"}


def space_names(augs: Sequence[str], num_spaces: int) -> list[str]:
    """``["z0", "z_<aug 1>", ..., LOOC_PLUS]`` for ``num_spaces`` heads (1 when trained without leave-one-out)."""
    augs = [_ALIASES.get(a, a) for a in augs]
    return ["z0", *(f"z_{a}" for a in augs[: num_spaces - 1]), LOOC_PLUS]


def is_space(representation: str) -> bool:
    """Whether ``representation`` names a LooC space or LooC++ (anything but ``model`` / ``random``)."""
    return representation not in ("model", "random")


def canonical_space(name: str, names: Sequence[str]) -> str:
    """``name`` as listed in ``names`` (:func:`space_names`): ``z<i>`` -> the i-th space, ``z_color`` ->
    ``z_colour``; an unknown name raises :class:`ConfigError` listing the valid ones."""
    key = name.lower()
    if key.startswith("z_"):
        key = "z_" + _ALIASES.get(key[2:], key[2:])
    if key[:1] == "z" and key[1:].isdigit() and int(key[1:]) < len(names) - 1:
        key = names[int(key[1:])]
    if key not in names:
        raise ConfigError(
            f"unknown representation {name!r}: use model, random or one of this LooC run's {', '.join(names)}"
        )
    return key


def space_features(head: nn.Sequential, v: Tensor, layer: str) -> Tensor:
    """One space of backbone features ``v`` ``(B, D)`` at ``layer`` (module docstring): ``hidden`` runs the head
    up to and including its first ReLU, ``output`` L2-normalises its output."""
    if layer == "output":
        return F.normalize(head(v), dim=1)
    if layer != "hidden":
        raise ConfigError(f"LooC space layer must be 'hidden' or 'output', got {layer!r}")
    for i, module in enumerate(head):
        if isinstance(module, nn.ReLU):
            return head[: i + 1](v)
    raise ConfigError("the LooC heads have a single linear layer (proj_layers 1): use looc.layer=output")


class SpaceHead(nn.Module):
    """Backbone features -> ``cat([v]?, Z_s for s in spaces)``: one space (``spaces=[i]``) or LooC++ (all)."""

    def __init__(
        self, heads: Sequence[nn.Sequential], spaces: Sequence[int], layer: str, with_v: bool
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.spaces = list(spaces)
        self.layer = layer
        self.with_v = with_v

    def forward(self, v: Tensor) -> Tensor:
        parts = [v] if self.with_v else []
        parts += [space_features(self.heads[i], v, self.layer) for i in self.spaces]  # type: ignore[arg-type]
        return torch.cat(parts, dim=1)


@dataclass
class LoocHeads:
    """What a LooC checkpoint holds beside its backbone: the heads ``h_0..h_n`` (eval mode), the atomic
    augmentations, and the run's LooC++ choices."""

    heads: list[nn.Sequential]
    augs: tuple[str, ...]
    layer: str
    with_v: bool
    source: str

    @property
    def names(self) -> list[str]:
        return space_names(self.augs, len(self.heads))


def _checkpoint_path(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    return latest_checkpoint(path) if path.is_dir() else path


def load_looc_heads(source: str | os.PathLike[str]) -> LoocHeads:
    """The heads of a LooC run folder (newest checkpoint) or training checkpoint; a clear error when the run
    is not a LooC run (only ``model`` and ``random`` make sense there)."""
    path = _checkpoint_path(source)
    obj = read_checkpoint(path)
    method: Any = (obj.get("config") or {}).get("method") if isinstance(obj, Mapping) else None
    state = obj.get("method_state") if isinstance(obj, Mapping) else None
    if not isinstance(method, Mapping) or method.get("name") != "looc" or not isinstance(state, Mapping):
        name = method.get("name") if isinstance(method, Mapping) else None
        raise CheckpointError(
            f"{path}: not a LooC training checkpoint (method {name!r}); its only representations are model "
            "and random (drop looc.spaces or the z*/looc++ representations)"
        )
    heads = [head_from_state_dict(sd).eval() for sd in heads_state(state)]
    if not heads:
        raise CheckpointError(f"{path}: a LooC checkpoint without heads.* in its method_state")
    augs = tuple(_ALIASES.get(a, a) for a in method.get("looc_augs") or ())
    return LoocHeads(
        heads,
        augs,
        str(method.get("looc_plus_layer") or "hidden"),
        bool(method.get("looc_plus_with_v", False)),
        str(path),
    )


def space_encoder(
    base: Encoder, looc: LoocHeads, name: str, layer: str | None = None, with_v: bool | None = None
) -> Encoder:
    """An :class:`Encoder` whose ``head`` maps ``base``'s backbone features to space ``name`` (or LooC++).
    ``layer`` / ``with_v`` default to the run's ``looc_plus_layer`` / ``looc_plus_with_v``; ``with_v`` only
    matters for LooC++. The backbone is ``base``'s own (shared, not copied)."""
    names = looc.names
    name = canonical_space(name, names)
    layer = layer or looc.layer
    if name == LOOC_PLUS:
        spaces, v = list(range(len(looc.heads))), looc.with_v if with_v is None else with_v
    else:
        spaces, v = [names.index(name)], False
    head = SpaceHead(looc.heads, spaces, layer, v).eval()
    tag = "looc-plus" + ("-v" if v else "") if name == LOOC_PLUS else name
    return Encoder(base.backbone, head, f"{base.key}-{tag}-{layer}", f"{looc.source} [{name}]")
