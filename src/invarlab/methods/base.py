"""The contract between a method and the trainer: :class:`Method`, :class:`StepOutput`, :class:`MethodConfig`.

A method owns everything that turns a batch of images into a loss: the backbone, heads, momentum encoders,
queues and the view recipe. The trainer owns the loop (optimiser, schedule, AMP, DDP, checkpoints, logging)
and calls, per step::

    out = method.training_step(images, labels, generator)   # uint8 (B, 3, H, W) on the device
    out.loss.backward(); optimizer.step()
    method.on_after_optimizer_step(step, total_steps)        # momentum updates

``method(images, labels, generator)`` is the same as ``training_step``, so a DDP-wrapped method gets its
gradient-synchronisation hooks. ``method.features(x)`` gives eval-mode backbone features of normalised float
images for kNN monitors and evaluations, without touching BatchNorm statistics.
"""

# ruff: noqa: RUF009  (opt() returns a dataclasses.field with metadata, not a shared default)
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from invarlab.config import opt
from invarlab.errors import ConfigError
from invarlab.nets.backbones import ARCHS, STEMS, ResNet, build_backbone
from invarlab.nets.momentum import BUFFER_MODES, cosine_momentum, update_momentum
from invarlab.queue import QUEUE_INITS
from invarlab.views import ViewConfig, make_views, mocov2_config, simclr_config

__all__ = ["VIEW_RECIPES", "Method", "MethodConfig", "StepOutput", "supervised_view_config"]

VIEW_RECIPES = ("auto", "mocov2", "simclr", "supervised")


@dataclass
class MethodConfig:
    """What a method is: backbone, heads, loss and view settings. Defaults are MoCo v2's (PAPERS.md §2.2.1)
    on a ResNet-50; CPU presets shrink the backbone (``width``, ``stem=cifar``), the queue and the views."""

    name: str = opt("moco", "training method: moco (MoCo v2), simclr or supervised")
    backbone: str = opt("resnet50", "backbone architecture", choices=tuple(ARCHS))
    stem: str = opt(
        "imagenet", "imagenet (7x7/2 conv + max-pool) or cifar (3x3/1 conv, for 32-64 px)", choices=STEMS
    )
    width: float = opt(
        1.0, "channel multiplier of the backbone (0.25 gives 16-128 channels)", range=(0.01, 16.0)
    )
    zero_init_residual: bool = opt(False, "start every residual branch at zero (last BN gamma = 0)")
    proj_dim: int = opt(128, "output dimension of the projection head", range=(1, 65536))
    proj_hidden_dim: int | None = opt(
        None, "hidden width of the projection head (null: backbone feature dim)"
    )
    proj_layers: int = opt(2, "linear layers in the projection head (1: MoCo v1's linear head)", range=(1, 8))
    proj_batch_norm: bool = opt(
        False,
        "MoCo, LooC, PIRL: BatchNorm1d after each hidden layer of the projection head (SimCLR / MoCo v3 style; "
        "SimCLR's head always has it)",
    )
    temperature: float = opt(0.2, "softmax temperature tau of the contrastive loss", range=(1e-4, 100.0))
    queue_size: int = opt(65536, "MoCo: number of negative keys K in the queue", range=(1, 2**24))
    queue_init: str = opt(
        "random", "MoCo: queue starts as random unit vectors (official) or empty", choices=QUEUE_INITS
    )
    momentum: float = opt(
        0.999, "MoCo: key-encoder momentum m (start value with a cosine schedule)", range=(0.0, 1.0)
    )
    momentum_schedule: str = opt(
        "constant", "MoCo: constant m, or cosine from m to 1 (BYOL)", choices=("constant", "cosine")
    )
    momentum_buffers: str = opt(
        "keep", "MoCo: key-encoder BN buffers: keep its own (official), copy or ema", choices=BUFFER_MODES
    )
    symmetric: bool = opt(False, "MoCo: also swap the views' roles and average the two losses")
    # P2 (Revisiting; docs/multicrop.md, docs/autoaugment.md, docs/nn_positives.md). All off by default.
    multicrop_n: int = opt(
        0, "MoCo: small crops per image, each contrasted with the key (P2: 4)", range=(0, 64)
    )
    multicrop_size: int = opt(
        0, "MoCo: side of the small crops; 0 = round(0.6 view_size) (P2: 96 beside 160)", range=(0, 4096)
    )
    multicrop_scale: list[float] = opt([0.05, 0.14], "MoCo: area fraction of the small crops", interval=True)
    constrained: bool = opt(False, "MoCo: small crops overlap the key crop by >= multicrop_min_overlap")
    multicrop_min_overlap: float = opt(
        0.1, "MoCo: least overlap with the key, as a fraction of the small crop's area", range=(0.0, 1.0)
    )
    autoaugment_p: float = opt(
        0.0,
        "MoCo: AutoAugment instead of the colour recipe on query and small crops (P2: 0.5)",
        range=(0.0, 1.0),
    )
    nn_topk: int = opt(0, "MoCo: nearest-neighbour positives per query, 0 = off (P2: 20)", range=(0, 65536))
    nn_weight: float = opt(0.4, "MoCo: weight of the nearest-neighbour loss", range=(0.0, 100.0))
    nn_warmup: float = opt(
        0.0,
        "MoCo: fraction of the steps before the NN loss starts (P2 warm-up: 5/200 = 0.025)",
        range=(0.0, 1.0),
    )
    shuffle_bn: bool = opt(
        True, "MoCo: shuffle the key batch across ranks, or across bn_splits in one process"
    )
    bn_splits: int = opt(
        1, "BatchNorm2d statistics per split of the batch (emulates per-GPU BN); 1: plain BN", range=(1, 4096)
    )
    views: str = opt("auto", "view recipe (auto: the method's own)", choices=VIEW_RECIPES)
    view_size: int = opt(224, "side of each augmented view in pixels", range=(8, 4096))
    view_overrides: dict[str, Any] = opt(
        {}, "ViewConfig fields to change, e.g. {blur_p: 0.0, scale: [0.08, 1.0]}"
    )
    # LooC (PAPERS.md §3, docs/looc.md); read only by method looc.
    looc_augs: list[str] = opt(
        ["colour", "rotation"],
        "LooC: atomic augmentations, one leave-one-out space each",
        choices=("colour", "color", "rotation", "texture"),
    )
    looc_leave_one_out: bool = opt(
        True, "LooC: keys k_1..k_n and spaces Z_1..Z_n; false: q, k_0, Z_0 only (MoCo, same augmentations)"
    )
    looc_multi_positive: bool = opt(True, "LooC: in Z_0 every key of the image is a positive (false: k_0)")
    looc_intra_negatives: bool = opt(True, "LooC: in Z_i the image's keys other than k_i are negatives")
    looc_enqueue: str = opt("k0", "LooC: keys enqueued in every space", choices=("k0", "all"))
    looc_rotations: list[int] = opt(
        [0, 1, 2, 3], "LooC: quarter turns of the rotation augmentation", range=(0, 3)
    )
    looc_texture: dict[str, Any] = opt({}, "LooC: TextureConfig fields to change, e.g. {p: 0.5}")
    looc_plus_layer: str = opt(
        "hidden",
        "LooC++: each head's first hidden layer or its normalised output",
        choices=("hidden", "output"),
    )
    looc_plus_with_v: bool = opt(False, "LooC++: put the backbone feature V first in the concatenation")
    wd_norm_bias: bool = opt(
        False, "also apply weight decay to norm weights and biases (the official MoCo code does)"
    )
    # PIRL (docs/pirl.md); defaults checked against the PIRL paper and VISSL's PIRL config (docs/pirl.md).
    pirl_loss: str = opt(
        "nce",
        "PIRL: the paper's NCE against uniform noise, or cross_entropy (InfoNCE over the sampled negatives)",
        choices=("nce", "cross_entropy"),
    )
    pirl_lambda: float = opt(
        0.5, "PIRL: weight of the jigsaw term; 1 - lambda on the image term", range=(0.0, 1.0)
    )
    pirl_bank_momentum: float = opt(
        0.5, "PIRL: memory bank EMA m <- normalize(mu m + (1 - mu) f)", range=(0.0, 1.0)
    )
    pirl_negatives: int = opt(
        32000, "PIRL: negatives N drawn from the memory bank per step", range=(1, 2**24)
    )
    pirl_bank_size: int = opt(0, "PIRL: memory bank rows; 0 = the training set's size", range=(0, 2**31 - 1))
    pirl_bank_init: str = opt(
        "random",
        "PIRL: bank rows start as random unit vectors (paper, VISSL) or as each image's embedding f(I) by the "
        "initial network (embed; docs/pirl.md)",
        choices=("random", "embed"),
    )
    pirl_normalizer: str = opt(
        "estimate",
        "PIRL: NCE partition Z estimated at the first step (Wu et al.), re-estimated per term at every step "
        "(running), or none (Z = 1)",
        choices=("estimate", "running", "none"),
    )
    pirl_patch_size: int = opt(64, "PIRL: side of each jigsaw patch in pixels", range=(4, 1024))
    pirl_jigsaw_scale: list[float] = opt(
        [0.6, 1.0], "PIRL: area fraction of the crop the 3 x 3 grid is cut from", interval=True
    )
    pirl_patch_fraction: float = opt(
        0.75, "PIRL: patch side / grid-cell side (64 of 85 px in PIRL)", range=(0.1, 1.0)
    )
    pirl_patch_dim: int = opt(
        128, "PIRL: per-patch projection width before the concatenation", range=(1, 65536)
    )
    # Frame Temporal Invariance / Region Tracker (docs/temporal.md); P1 leaves these [N/A]: our defaults.
    temporal_gap_min: int = opt(1, "temporal: smallest frame gap between query and key", range=(1, 100000))
    temporal_gap_max: int = opt(8, "temporal: largest frame gap between query and key", range=(1, 100000))
    temporal_region_fraction: float = opt(
        0.5,
        "region_tracker: fraction of pairs that are tracked-region crops (rest: frame pairs)",
        range=(0.0, 1.0),
    )
    temporal_tracks: str = opt(
        "gt",
        "region_tracker: gt (the source's boxes and track ids) or unsup (proposals + optical flow)",
        choices=("gt", "unsup"),
    )
    temporal_proposals: str = opt(
        "edges", "region_tracker unsup: proposal method", choices=("edges", "saliency")
    )
    temporal_region_margin: float = opt(
        1.2, "region crop: square side = margin x the box's longer side", range=(1.0, 4.0)
    )
    temporal_min_box: int = opt(6, "regions: smallest box side in source pixels", range=(1, 4096))
    temporal_track_min_inside: float = opt(
        0.6,
        "unsup tracker: drop a track once less than this fraction of its box is in the frame",
        range=(0.0, 1.0),
    )
    temporal_track_fb_error: float = opt(
        1.0,
        "unsup tracker: forward-backward flow error (px) under which a pixel counts as consistent; 0 = off",
        range=(0.0, 100.0),
    )
    temporal_track_min_consistent: float = opt(
        0.5,
        "unsup tracker: drop a track when fewer of its box's pixels are flow-consistent",
        range=(0.0, 1.0),
    )


@dataclass
class StepOutput:
    """What one training step returns: a differentiable scalar and plain floats for the logger."""

    loss: Tensor
    metrics: dict[str, float]


def supervised_view_config(**overrides: object) -> ViewConfig:
    """The standard supervised ImageNet recipe: RandomResizedCrop scale (0.08, 1) and a horizontal flip, no
    colour, grayscale or blur."""
    base: dict[str, object] = {
        "scale": (0.08, 1.0),
        "brightness": 0.0,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
        "jitter_p": 0.0,
        "grayscale_p": 0.0,
        "blur_p": 0.0,
    }
    base.update(overrides)
    return ViewConfig(**base).validate()  # type: ignore[arg-type]


def resolve_view_config(cfg: MethodConfig, default: str) -> ViewConfig:
    """The :class:`ViewConfig` of ``cfg.views`` (``auto`` → ``default``) with ``cfg.view_overrides`` applied."""
    recipe = default if cfg.views == "auto" else cfg.views
    fields = {f.name for f in dataclasses.fields(ViewConfig)}
    overrides: dict[str, object] = {}
    for key, value in cfg.view_overrides.items():
        if key not in fields:
            near = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; valid: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown key 'view_overrides.{key}'{hint}")
        # YAML gives lists; ViewConfig's sequence fields are tuples (and are hashed / compared as such).
        overrides[key] = tuple(value) if isinstance(value, list) else value
    if recipe == "mocov2":
        return mocov2_config(**overrides)
    if recipe == "simclr":
        return simclr_config(cfg.view_size, **overrides)
    if recipe == "supervised":
        return supervised_view_config(**overrides)
    raise ConfigError(f"unknown view recipe {recipe!r}: use one of {', '.join(VIEW_RECIPES)}")


class Method(nn.Module):
    """Base class of every method; subclasses set :attr:`name`, build their heads and implement
    :meth:`training_step`. ``backbone`` is a headless ResNet whose forward gives pooled ``(B, D)`` features."""

    name: str = "method"
    default_views: str = "mocov2"  # the recipe that views="auto" means for this method
    backbone: ResNet
    head: nn.Module | None

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(
            cfg.backbone, cfg.stem, cfg.width, num_classes=0, zero_init_residual=cfg.zero_init_residual
        )
        self.head = None
        self.view_config = resolve_view_config(cfg, self.default_views)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def make_views(self, images: Tensor, generator: torch.Generator | None, n_views: int) -> list[Tensor]:
        """``n_views`` augmented float views ``(B, 3, view_size, view_size)`` of uint8 ``images``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (B, 3, H, W), got {tuple(images.shape)} {images.dtype}")
        # Views in float32 whatever the trainer's autocast: a bf16 crop or blur would change the pixels.
        with torch.autocast(images.device.type, enabled=False):
            views, _ = make_views(images, self.cfg.view_size, generator, self.view_config, n_views)
        return views

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        """Views from ``images`` (uint8 ``(B, 3, H, W)`` on the training device), forward, loss and metrics."""
        raise NotImplementedError

    def forward(
        self, images: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> StepOutput:
        return self.training_step(images, labels, generator)  # type: ignore[arg-type]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, momentum copy)`` pairs that :meth:`on_after_optimizer_step` updates; none by default."""
        return []

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum m after optimiser step ``step`` of ``total_steps``: constant, or BYOL's cosine to 1."""
        if self.cfg.momentum_schedule == "cosine":
            return cosine_momentum(step, max(total_steps, 1), base=self.cfg.momentum)
        return self.cfg.momentum

    @torch.no_grad()
    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        """``θ_k ← m θ_k + (1 − m) θ_q`` for every momentum pair, after the optimiser changed ``θ_q``."""
        pairs = self.momentum_pairs()
        if not pairs:
            return
        m = self.momentum_at(step, total_steps)
        for online, target in pairs:
            update_momentum(online, target, m, buffers=self.cfg.momentum_buffers)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Trainable parameters in two optimiser groups: ``decay`` (conv and linear weights) with
        ``weight_decay``, ``no_decay`` (every 0-/1-D tensor: norm weights and biases) with 0, unless
        ``cfg.wd_norm_bias``. Momentum copies have no gradient and are left out. Empty groups are dropped."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 and not self.cfg.wd_norm_bias else decay).append(p)
        groups = [
            {"name": "decay", "params": decay, "weight_decay": weight_decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    @torch.no_grad()
    def features(self, images_float_normalised: Tensor) -> Tensor:
        """Pooled backbone features ``(B, D)`` in eval mode; every module's train/eval flag is restored after,
        so calling it mid-training changes neither BatchNorm statistics nor the training mode."""
        modes = [(m, m.training) for m in self.backbone.modules()]
        self.backbone.eval()
        try:
            return self.backbone(images_float_normalised)
        finally:
            for m, mode in modes:
                m.training = mode

    def extra_repr(self) -> str:
        return f"name={self.name!r}, views={self.cfg.views!r}, view_size={self.cfg.view_size}"
