"""Multi-crop views with constrained small crops and optional AutoAugment (P2, PAPERS.md §2.2.2-2.2.3).

Per image: ``n_large`` large crops (RandomResizedCrop, scale ``(0.2, 1)``) and ``n_small`` small crops (scale
``(0.05, 0.14)``), each with the MoCo v2 photometric recipe. Crop ``key_index`` (P2: crop 1, the last large one)
is the key; every other crop is a query contrasted with that one key.

**Constrained cropping.** Each small crop is drawn up to ``tries`` times (10) until its box overlaps the key's
box by at least ``min_overlap`` (10%) of the small box's own area:

    |small ∩ key| >= min_overlap · h_small · w_small

and the first try that satisfies it is kept. If none does, the crop falls back to one fresh unconstrained
RandomResizedCrop draw (P2's documented fallback); :attr:`MultiCropViews.constrained` records which crops met
the bound. PAPERS.md states the bound on the small crop's *target* area ``a H W`` of the draw; the box's actual
area ``w h`` differs from it by the rounding of ``w`` and ``h`` only, and makes the bound hold exactly for
the returned box.

**AutoAugment.** With ``autoaugment_p > 0`` every crop except the key takes AutoAugment instead of the
photometric recipe with that probability (P2: 0.5): ``crop → flip → AutoAugment → normalise``. The key never
does.

Everything is batched on the images' device, with one parameter set per sample and crop drawn from an explicit
generator; the parameters come back with the views (:class:`MultiCropViews`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from invarlab.errors import ConfigError
from invarlab.views import ops
from invarlab.views.autoaugment import AutoAugmentParams, autoaugment, sample_autoaugment
from invarlab.views.params import ViewParams, sample_crop_boxes
from invarlab.views.recipes import ViewConfig, apply_view, mocov2_config, sample_view_params

# P2's crop sides at ImageNet/COCO scale (224 px inputs): large 160, small 96.
PAPER_LARGE, PAPER_SMALL, PAPER_INPUT = 160, 96, 224


def scaled_sizes(side: int) -> tuple[int, int]:
    """P2's ``(160, 96)`` crop sides scaled from 224 px inputs to ``side`` px: ``round(side 160 / 224)``,
    ``round(side 96 / 224)`` (``(23, 14)`` for 32 px images, ``(46, 27)`` for 64 px)."""
    return max(1, round(side * PAPER_LARGE / PAPER_INPUT)), max(1, round(side * PAPER_SMALL / PAPER_INPUT))


@dataclass
class MultiCropConfig:
    """Options of the multi-crop recipe. Defaults are P2's (PAPERS.md §2.2.2-2.2.3, ``ours`` scripts)."""

    n_large: int = 2
    n_small: int = 4
    large_size: int = PAPER_LARGE
    small_size: int = PAPER_SMALL
    small_scale: tuple[float, float] = (0.05, 0.14)  # area fraction of the small crops
    key_index: int = 1  # the key crop, one of the large ones (P2: the second)
    constrained: bool = True
    min_overlap: float = 0.1  # of the small crop's own area
    tries: int = 10
    autoaugment_p: float = 0.5  # on every crop but the key; 0 disables
    view: ViewConfig = field(default_factory=mocov2_config)  # photometric recipe; view.scale: the large crops

    def validate(self) -> MultiCropConfig:
        """Raise ``ConfigError`` naming the first bad option; returns ``self``."""
        checks = [
            ("n_large", self.n_large >= 1, "at least 1 (the key is a large crop)"),
            ("n_small", self.n_small >= 0, ">= 0"),
            ("large_size", self.large_size >= 1, ">= 1"),
            ("small_size", self.small_size >= 1, ">= 1"),
            ("small_scale", 0 < self.small_scale[0] <= self.small_scale[1] <= 1, "0 < min <= max <= 1"),
            (
                "key_index",
                0 <= self.key_index < self.n_large,
                f"an index of a large crop, 0..{self.n_large - 1}",
            ),
            ("min_overlap", 0 <= self.min_overlap <= 1, "a fraction in [0, 1]"),
            ("tries", self.tries >= 1, ">= 1"),
            ("autoaugment_p", 0 <= self.autoaugment_p <= 1, "a probability in [0, 1]"),
            ("n_large + n_small", self.n_large + self.n_small >= 2, "at least one query crop beside the key"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"multicrop.{name}: expected {expected}")
        self.view.validate()
        return self

    @property
    def n_crops(self) -> int:
        return self.n_large + self.n_small

    def size_of(self, crop: int) -> int:
        return self.large_size if crop < self.n_large else self.small_size


def intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """Area of the intersection of boxes ``(..., 4)`` = (top, left, height, width), broadcast over ``...``:
    ``max(0, min(t_a + h_a, t_b + h_b) − max(t_a, t_b)) · max(0, min(l_a + w_a, l_b + w_b) − max(l_a, l_b))``."""
    h = (
        torch.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ).clamp(min=0)
    w = (
        torch.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    ).clamp(min=0)
    return h * w


def sample_constrained_boxes(
    key_boxes: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    min_overlap: float,
    generator: torch.Generator | None,
    tries: int = 10,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Small-crop boxes that overlap ``key_boxes`` ``(n, 4)`` by at least ``min_overlap`` of their own area.

    ``tries`` candidate RandomResizedCrop boxes per sample (each drawn as :func:`sample_crop_boxes` draws one);
    the first with ``|box ∩ key| >= min_overlap · h · w`` wins. Where none does, the box is one more
    unconstrained draw (the fallback). Returns ``(boxes (n, 4), constrained (n,) bool)``; ``constrained`` is
    false where the fallback was taken. Always draws ``tries + 1`` boxes per sample.
    """
    n = key_boxes.shape[0]
    gdev = generator.device if generator is not None else torch.device("cpu")
    candidates = sample_crop_boxes(n * tries, height, width, scale, ratio, generator, gdev).reshape(
        n, tries, 4
    )
    fallback = sample_crop_boxes(n, height, width, scale, ratio, generator, gdev)
    key = key_boxes.to(gdev, torch.float32)[:, None, :]
    # float64, so that a box exactly at the bound (e.g. 42 of 420 px) passes as with exact arithmetic.
    area = candidates[..., 2].double() * candidates[..., 3].double()
    ok = intersection_area(candidates, key).double() >= min_overlap * area
    first = ok.to(torch.uint8).argmax(dim=1)  # the first satisfying try (0 if none)
    chosen = candidates[torch.arange(n, device=gdev), first]
    met = ok.any(dim=1)
    boxes = torch.where(met[:, None], chosen, fallback)
    dev = device or gdev
    return boxes.to(dev), met.to(dev)


@dataclass
class MultiCropViews:
    """The crops of a batch and everything needed to rebuild them.

    ``crops[i]`` is ``(B, 3, s_i, s_i)``: the large crops first, then the small ones; ``crops[key_index]`` is the
    key. ``autoaugment[i]`` is None for crops that cannot take AutoAugment (the key, or all with p = 0).
    ``constrained`` ``(n_small, B)`` is false where a small crop took the fallback.
    """

    crops: list[Tensor]
    params: list[ViewParams]
    autoaugment: list[AutoAugmentParams | None]
    constrained: Tensor
    key_index: int

    @property
    def key(self) -> Tensor:
        return self.crops[self.key_index]

    @property
    def query_indices(self) -> list[int]:
        return [i for i in range(len(self.crops)) if i != self.key_index]

    def queries_by_size(self) -> list[tuple[int, list[int]]]:
        """Query crop indices grouped by side, in order of first appearance: one backbone forward each."""
        groups: dict[int, list[int]] = {}
        for i in self.query_indices:
            groups.setdefault(self.crops[i].shape[-1], []).append(i)
        return list(groups.items())


def _without_photometry(params: ViewParams, mask: Tensor) -> ViewParams:
    """Switch the photometric ops off where ``mask`` is true (those samples take AutoAugment instead)."""
    keep = ~mask.to(params.flip.device)
    return replace(
        params,
        jitter_applied=params.jitter_applied & keep,
        grayscale=params.grayscale & keep,
        blur_applied=params.blur_applied & keep,
        solarize=params.solarize & keep,
    )


def apply_crop(
    images: Tensor,
    params: ViewParams,
    aa: AutoAugmentParams | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One crop of ``images`` from its recorded parameters: the view recipe up to (not including) the
    normalisation, AutoAugment on the samples that drew it, then the normalisation."""
    if aa is None:
        return apply_view(images, params, dtype)
    x = apply_view(images, replace(params, mean=None, std=None), dtype)
    x = autoaugment(x, aa)
    if params.mean is not None and params.std is not None:
        x = ops.normalize(x, params.mean, params.std)
    return x


def multicrop_views(
    images: Tensor, config: MultiCropConfig, generator: torch.Generator | None
) -> MultiCropViews:
    """The multi-crop views of uint8 ``images`` ``(B, 3, H, W)`` (see the module docstring).

    Draw order: every large crop's parameters, then for each small crop its parameters and (when constrained)
    its ``tries + 1`` candidate boxes; then the AutoAugment draws of every non-key crop (when p > 0).
    """
    config.validate()
    b, shape, device = images.shape[0], (images.shape[-2], images.shape[-1]), images.device
    large = config.view
    small = dataclasses.replace(large, scale=tuple(config.small_scale))
    params: list[ViewParams] = []
    for _ in range(config.n_large):
        params.append(sample_view_params(large, b, shape, config.large_size, generator, device))
    key_boxes = params[config.key_index].boxes
    met = []
    for _ in range(config.n_small):
        p = sample_view_params(small, b, shape, config.small_size, generator, device)
        if config.constrained:
            boxes, ok = sample_constrained_boxes(
                key_boxes,
                *shape,
                small.scale,
                small.ratio,
                config.min_overlap,
                generator,
                config.tries,
                device,
            )
            p = replace(p, boxes=boxes)
            met.append(ok)
        else:
            met.append(torch.ones(b, dtype=torch.bool, device=device))
        params.append(p)
    aa: list[AutoAugmentParams | None] = [None] * config.n_crops
    if config.autoaugment_p > 0:
        for i in range(config.n_crops):
            if i != config.key_index:
                aa[i] = sample_autoaugment(b, config.size_of(i), config.autoaugment_p, generator, device)
                params[i] = _without_photometry(params[i], aa[i].enabled)
    crops = [apply_crop(images, p, a) for p, a in zip(params, aa, strict=True)]
    constrained = torch.stack(met) if met else torch.zeros(0, b, dtype=torch.bool, device=device)
    return MultiCropViews(crops, params, aa, constrained, config.key_index)


__all__ = [
    "PAPER_INPUT",
    "PAPER_LARGE",
    "PAPER_SMALL",
    "MultiCropConfig",
    "MultiCropViews",
    "apply_crop",
    "intersection_area",
    "multicrop_views",
    "sample_constrained_boxes",
    "scaled_sizes",
]
