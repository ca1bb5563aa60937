"""LooC, Leave-one-out Contrastive Learning (Xiao et al., ICLR 2021), on MoCo, as PAPERS.md §3.2-3.5 describe.

Per step, for a batch of images and atomic augmentations ``A_1..A_n`` (``cfg.looc_augs``):

1. views ``q, k_0, k_1..k_n`` (:mod:`invarlab.views.looc`): ``k_0`` redraws every atomic augmentation, ``k_i``
   shares ``A_i``'s parameters with ``q`` and redraws the others; crop and flip are redrawn for every view;
2. a shared backbone ``f`` and ``n + 1`` projection heads ``h_0..h_n``: ``q^(i) = normalize(h_i(f(q)))``;
3. momentum copies of the backbone and of every head: ``k_j^(i) = normalize(h_i^m(f^m(k_j)))`` for every key
   ``j`` and space ``i`` (shuffle-BN as in MoCo);
4. ``L = (1/(n+1)) Σ_i L_i`` (:func:`looc_loss`), with one queue ``Q_i`` per space ``Z_i``;
5. ``k_0``'s embedding in each space (or every key's, ``looc_enqueue: all``) is enqueued into that space's queue;
6. after the optimiser step, ``θ_m ← m θ_m + (1 − m) θ`` for the backbone and all heads.

``looc_leave_one_out: false`` keeps only ``q``, ``k_0``, ``h_0`` and ``Q_0``: that is MoCo v2 with the LooC
augmentations (the "MoCo" and "MoCo + rotation" baselines of PAPERS.md §3.9).

Representations (PAPERS.md §3.5, :meth:`LooC.representations`): LooC is the backbone feature ``V``; LooC++ is
the concatenation of the spaces, each head's first hidden layer or its normalised output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
from invarlab.errors import CheckpointError, ConfigError
from invarlab.losses import info_nce, info_nce_extra_negatives, info_nce_per_positive
from invarlab.methods.base import Method, MethodConfig, StepOutput
from invarlab.nets.heads import ProjectionHead
from invarlab.nets.momentum import momentum_copy
from invarlab.queue import FeatureQueue
from invarlab.views.looc import LoocViewConfig, LoocViews, canonical_augs, looc_views
from invarlab.views.texture import TextureConfig

__all__ = [
    "LooC",
    "LoocRepresentations",
    "load_looc",
    "looc_invariant_loss",
    "looc_loss",
    "looc_variant_loss",
]


def looc_invariant_loss(
    q: Tensor, keys: Tensor, queue: Tensor, temperature: float, multi_positive: bool = True
) -> Tensor:
    r"""``L_0`` of the all-invariant space ``Z_0`` (PAPERS.md §3.4).

    ``q`` ``(B, D)``: the queries ``q^(0)``; ``keys`` ``(B, J, D)``: ``k_0^(0)..k_n^(0)`` of the same images
    (``J = n + 1``); ``queue`` ``Q_0`` ``(K, D)``; all L2-normalised. Every view of the image is a positive:

        L_0 = −(1/B) Σ_b (1/J) Σ_{j=0..n} log [ exp(q·k_j/τ) / ( exp(q·k_j/τ) + Σ_{u ∈ Q_0} exp(q·u/τ) ) ]

    With ``multi_positive=False`` only ``k_0`` is (the third-party MoCo-style simplification, plain MoCo):
    ``L_0 = −(1/B) Σ_b log [ exp(q·k_0/τ) / ( exp(q·k_0/τ) + Σ_u exp(q·u/τ) ) ]``.
    """
    if multi_positive:
        return info_nce_per_positive(q, keys, queue, temperature)
    return info_nce(q, keys[:, 0], queue, temperature)


def looc_variant_loss(
    q: Tensor, keys: Tensor, space: int, queue: Tensor, temperature: float, intra_negatives: bool = True
) -> Tensor:
    r"""``L_i`` of the leave-one-out space ``Z_i``, ``i = space >= 1`` (PAPERS.md §3.4).

    ``q`` ``(B, D)``: ``q^(i)``; ``keys`` ``(B, J, D)``: ``k_0^(i)..k_n^(i)``; ``queue`` ``Q_i`` ``(K, D)``;
    all L2-normalised. Only ``k_i`` (which shares ``A_i`` with ``q``) is a positive; the image's other keys,
    which differ from ``q`` in ``A_i``, are negatives beside the queue:

        L_i = −(1/B) Σ_b log [ exp(q·k_i/τ) / ( exp(q·k_i/τ) + Σ_{j ∈ {0..n} \ {i}} exp(q·k_j/τ)
                                                   + Σ_{u ∈ Q_i} exp(q·u/τ) ) ]

    ``intra_negatives=False`` drops the middle sum (negatives from the queue only).
    """
    if not 1 <= space < keys.shape[1]:
        raise ValueError(f"space must be in 1..{keys.shape[1] - 1}, got {space}")
    others = [j for j in range(keys.shape[1]) if j != space]
    extra = keys[:, others] if intra_negatives else keys[:, :0]
    return info_nce_extra_negatives(q, keys[:, space], extra, queue, temperature)


def looc_loss(
    queries: list[Tensor],
    keys: list[Tensor],
    queues: list[Tensor],
    temperature: float,
    multi_positive: bool = True,
    intra_negatives: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""The LooC objective ``L = (1/S) Σ_{i=0..S−1} L_i`` over ``S`` spaces (PAPERS.md §3.4).

    ``queries[i]`` ``(B, D)``, ``keys[i]`` ``(B, J, D)`` and ``queues[i]`` ``(K_i, D)`` are space ``i``'s query,
    keys ``k_0..k_{J−1}`` and queue; space 0 is :func:`looc_invariant_loss`, space ``i >= 1``
    :func:`looc_variant_loss`. Computed in at least float32 whatever the autocast (as MoCo's logits). Returns
    ``(L, per-space losses (S,))``.
    """
    if not len(queries) == len(keys) == len(queues) or not queries:
        raise ValueError(
            f"one query, key set and queue per space, got {len(queries)}, {len(keys)}, {len(queues)}"
        )
    parts = []
    with torch.autocast(queries[0].device.type, enabled=False):
        for i, (q, k, u) in enumerate(zip(queries, keys, queues, strict=True)):
            dt = torch.promote_types(q.dtype, torch.float32)  # float64 stays float64 (tests)
            q, k, u = q.to(dt), k.to(dt), u.to(dt)
            if i == 0:
                parts.append(looc_invariant_loss(q, k, u, temperature, multi_positive))
            else:
                parts.append(looc_variant_loss(q, k, i, u, temperature, intra_negatives))
    per_space = torch.stack(parts)
    return per_space.mean(), per_space


@dataclass
class LoocRepresentations:
    """Eval-mode representations of a batch: ``v`` the backbone feature ``V`` (LooC), ``z[i]`` space ``i`` at
    ``layer`` (``hidden``: ``ReLU(W_1 v + b_1)`` of head ``i``; ``output``: ``normalize(h_i(v))``), and
    ``plus`` = ``cat([v]? , z[0], z[1], ..., z[n])`` (LooC++; ``v`` first only when ``with_v``)."""

    v: Tensor
    z: tuple[Tensor, ...]
    plus: Tensor
    layer: str
    with_v: bool


class LooC(Method):
    """LooC on MoCo: ``backbone`` and ``heads[0..n]`` (online), ``backbone_momentum`` and ``heads_momentum``
    (momentum copies), ``queues[0..n]`` (one :class:`FeatureQueue` per space, labels beside the keys)."""

    name = "looc"
    default_views = "mocov2"

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        super().__init__(cfg)
        texture_fields = {f.name for f in dataclasses.fields(TextureConfig)}
        unknown = sorted(set(cfg.looc_texture) - texture_fields)
        if unknown:
            raise ConfigError(
                f"unknown key 'method.looc_texture.{unknown[0]}'; valid: {', '.join(sorted(texture_fields))}"
            )
        texture = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.looc_texture.items()}
        self.view_spec = LoocViewConfig(
            augs=canonical_augs(cfg.looc_augs),
            view=self.view_config,
            rotations=tuple(cfg.looc_rotations),
            texture=TextureConfig(**texture),
            leave_one_out=cfg.looc_leave_one_out,
        ).validate()
        self.augs = self.view_spec.augs
        self.num_spaces = self.view_spec.num_keys  # n + 1 spaces, one per key (1 without leave-one-out)
        self.temperature = cfg.temperature
        d = self.backbone.feature_dim
        self.heads = nn.ModuleList(
            ProjectionHead(
                d,
                cfg.proj_dim,
                cfg.proj_hidden_dim,
                num_layers=cfg.proj_layers,
                batch_norm=cfg.proj_batch_norm,
            )
            for _ in range(self.num_spaces)
        )
        convert_to_split_bn(self.backbone, cfg.bn_splits)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.heads_momentum = momentum_copy(self.heads)
        self.queues = nn.ModuleList(
            FeatureQueue(cfg.queue_size, cfg.proj_dim, with_labels=True, init=cfg.queue_init)
            for _ in range(self.num_spaces)
        )
        self._momentum = cfg.momentum

    @property
    def space_names(self) -> tuple[str, ...]:
        """``Z_0`` is invariant to every augmentation; ``Z_i`` is variant to ``augs[i - 1]`` only."""
        return ("invariant", *self.augs[: self.num_spaces - 1])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.heads, self.heads_momentum)]

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        self._momentum = self.momentum_at(step, total_steps)
        super().on_after_optimizer_step(step, total_steps)

    def encode_queries(self, x: Tensor) -> list[Tensor]:
        """``[normalize(h_i(f(x))) for each space i]``, with gradient; one backbone forward."""
        v = self.backbone(x)
        return [F.normalize(head(v), dim=1) for head in self.heads]

    @torch.no_grad()
    def encode_keys(self, views: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
        """Momentum embeddings of key views ``[k_0..k_{J−1}]`` in every space: a list over spaces of ``(B, J,
        D)``. Each key view is its own BatchNorm batch (as MoCo's single key), shuffled as MoCo shuffles."""
        shuffle = shuffle_bn_active(self.cfg.shuffle_bn, self.cfg.bn_splits)
        per_key = []
        for x in views:
            if shuffle:
                x, idx_unshuffle = batch_shuffle(x, generator)
            v = self.backbone_momentum(x)
            z = torch.stack([F.normalize(head(v), dim=1) for head in self.heads_momentum], dim=1)  # (B, S, D)
            per_key.append(batch_unshuffle(z, idx_unshuffle) if shuffle else z)
        stacked = torch.stack(per_key, dim=2)  # (B, S, J, D)
        return list(stacked.unbind(dim=1))

    def make_looc_views(self, images: Tensor, generator: torch.Generator | None) -> LoocViews:
        """The :class:`~invarlab.views.looc.LoocViews` ``[q, k_0..k_n]`` of uint8 ``images`` (float32)."""
        with torch.autocast(images.device.type, enabled=False):
            return looc_views(images, self.cfg.view_size, generator, self.view_spec)

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        lv = self.make_looc_views(images, generator)
        queries = self.encode_queries(lv.query)
        keys = self.encode_keys(lv.keys, generator)
        # Cloned because enqueue() below writes into the buffers before backward() needs them.
        negatives = [queue.features.clone() for queue in self.queues]
        loss, per_space = looc_loss(
            queries,
            keys,
            negatives,
            self.temperature,
            self.cfg.looc_multi_positive,
            self.cfg.looc_intra_negatives,
        )
        self._enqueue(keys, labels)
        return StepOutput(loss, self._metrics(loss, per_space, queries[0], keys[0]))

    @torch.no_grad()
    def _enqueue(self, keys: list[Tensor], labels: Tensor | None) -> None:
        every = self.cfg.looc_enqueue == "all"
        lab = None
        if labels is not None:
            lab = labels.to(keys[0].device)
            lab = lab.repeat_interleave(keys[0].shape[1]) if every else lab
            lab = concat_all_gather(lab)
        for queue, k in zip(self.queues, keys, strict=True):
            rows = k.reshape(-1, k.shape[-1]) if every else k[:, 0]  # image-major: k_0..k_n of image 0, ...
            queue.enqueue(concat_all_gather(rows.contiguous()), lab)

    @torch.no_grad()
    def _metrics(self, loss: Tensor, per_space: Tensor, q0: Tensor, k0: Tensor) -> dict[str, float]:
        l_pos = (q0.float() * k0[:, 0].float()).sum(dim=1).mean()
        fill = self.queues[0].count.to(loss.device, torch.float32) / self.queues[0].size
        values = torch.cat([torch.stack([loss.detach().float(), l_pos, fill]), per_space.detach().float()])
        values_list = values.tolist()  # one host synchronisation
        out = dict(zip(("loss", "l_pos", "queue_fill"), values_list[:3], strict=True))
        for name, value in zip(self.space_names, values_list[3:], strict=True):
            out[f"loss_{name}"] = value
        out["momentum"] = float(self._momentum)
        return out

    @torch.no_grad()
    def representations(
        self, images_float_normalised: Tensor, layer: str | None = None, with_v: bool | None = None
    ) -> LoocRepresentations:
        """``V``, every ``Z_i`` and their LooC++ concatenation for normalised float images ``(B, 3, H, W)``, in
        eval mode (BatchNorm running statistics; every module's mode is restored after). ``layer`` and
        ``with_v`` default to ``cfg.looc_plus_layer`` and ``cfg.looc_plus_with_v``."""
        layer = layer or self.cfg.looc_plus_layer
        with_v = self.cfg.looc_plus_with_v if with_v is None else with_v
        if layer not in ("hidden", "output"):
            raise ConfigError(f"LooC++ layer must be 'hidden' or 'output', got {layer!r}")
        if layer == "hidden" and self.cfg.proj_layers < 2:
            raise ConfigError("method.proj_layers is 1: the heads have no hidden layer; use layer 'output'")
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            v = self.backbone(images_float_normalised)
            # head[0] is the first Linear and head[1] its ReLU (ProjectionHead without BatchNorm).
            z = tuple(
                head[1](head[0](v)) if layer == "hidden" else F.normalize(head(v), dim=1)
                for head in self.heads
            )
        finally:
            for m, mode in modes:
                m.training = mode
        plus = torch.cat(((v,) if with_v else ()) + z, dim=1)
        return LoocRepresentations(v, z, plus, layer, with_v)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, augs={list(self.augs)}, spaces={self.num_spaces}"


def load_looc(source: str | Path, device: torch.device | str = "cpu") -> LooC:
    """A :class:`LooC` rebuilt from a training checkpoint (or the newest one of a run folder), in eval mode,
    for evaluations that need the heads (LooC++)."""
    from invarlab.methods import build_method
    from invarlab.train.checkpoint import find_latest, load_training_checkpoint

    path = Path(source)
    if path.is_dir():
        found = find_latest(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint in {path / 'checkpoints'} (train first)")
        path = found
    ckpt = load_training_checkpoint(path)
    method_cfg = (ckpt.get("config") or {}).get("method")
    if not isinstance(method_cfg, dict) or method_cfg.get("name") != "looc":
        raise CheckpointError(
            f"{path}: not a LooC run (method {ckpt.get('method')!r}); use its backbone instead"
        )
    known = {f.name for f in dataclasses.fields(MethodConfig)}
    cfg = MethodConfig(**{k: v for k, v in method_cfg.items() if k in known})
    model = build_method(cfg)
    if not isinstance(model, LooC):
        raise CheckpointError(f"{path}: method {cfg.name!r} did not build a LooC model")
    try:
        model.load_state_dict(ckpt["method_state"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit a LooC model ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()
