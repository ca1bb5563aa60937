"""View recipes: a config of augmentation options, parameter sampling, and the batched pipeline.

The pipeline for one view, in the order of MoCo v2's torchvision recipe (PAPERS.md §2.2.2):

    uint8 -> float [0, 1] -> RandomResizedCrop (+ horizontal flip) -> RandomApply(ColorJitter, p)
    -> RandomGrayscale -> RandomApply(GaussianBlur, p) -> RandomSolarize -> quarter-turn rotation -> Normalize

The flip is done inside the crop's resampling matrix. That equals MoCo v2's flip after the blur, because flipping
commutes with the pixelwise colour ops, with the contrast mean and with a symmetric blur under reflect padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from invarlab.errors import ConfigError
from invarlab.views import ops
from invarlab.views.params import (
    ViewParams,
    bernoulli,
    sample_crop_boxes,
    sample_jitter,
    sample_rotation,
    uniform,
)


@dataclass
class ViewConfig:
    """Options of one view recipe. Defaults are MoCo v2's (PAPERS.md §2.2.2)."""

    scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio, sampled log-uniformly
    antialias: bool = True  # antialiased bilinear resize (torchvision v2's default; PIL always antialiases)
    flip_p: float = 0.5
    brightness: float = 0.4  # ColorJitter strengths; 0 disables a component
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8  # RandomApply probability of the whole ColorJitter
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in output pixels
    blur_kernel_size: int | None = None  # None: 2 ceil(3 sigma_max) + 1 (see ops.gaussian_kernel_size)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # on the [0, 1] scale (128 / 255 for uint8 images, as BYOL)
    rotations: tuple[int, ...] = (0,)  # quarter turns, drawn uniformly; (0, 1, 2, 3) for LooC's rotation
    mean: tuple[float, ...] | None = ops.IMAGENET_MEAN  # None: no normalisation
    std: tuple[float, ...] | None = ops.IMAGENET_STD

    def validate(self) -> ViewConfig:
        """Raise ``ConfigError`` naming the first bad option; returns ``self``."""
        checks = [
            ("scale", 0 < self.scale[0] <= self.scale[1], "0 < min <= max"),
            ("ratio", 0 < self.ratio[0] <= self.ratio[1], "0 < min <= max"),
            ("hue", 0 <= self.hue <= 0.5, "a value in [0, 0.5]"),
            ("blur_sigma", 0 < self.blur_sigma[0] <= self.blur_sigma[1], "0 < min <= max"),
            (
                "blur_kernel_size",
                self.blur_kernel_size is None
                or (self.blur_kernel_size > 0 and self.blur_kernel_size % 2 == 1),
                "an odd positive integer or null",
            ),
            ("rotations", len(self.rotations) > 0, "at least one quarter-turn count"),
            ("mean/std", (self.mean is None) == (self.std is None), "both set or both null"),
        ]
        for name in ("brightness", "contrast", "saturation"):
            checks.append((name, getattr(self, name) >= 0, "a value >= 0"))
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            checks.append((name, 0 <= getattr(self, name) <= 1, "a probability in [0, 1]"))
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"views.{name}: expected {expected}")
        return self


def mocov2_config(**overrides: object) -> ViewConfig:
    """MoCo v2: RRC scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, blur [0.1, 2] p=0.5."""
    return ViewConfig(**overrides).validate()  # type: ignore[arg-type]


def simclr_config(size: int, **overrides: object) -> ViewConfig:
    """SimCLR (ImageNet): RRC scale (0.08, 1), ColorJitter(0.8, 0.8, 0.8, 0.2) p=0.8, grayscale 0.2,
    blur sigma [0.1, 2] p=0.5 with a kernel of 10% of the view size (odd); pass ``blur_p=0`` for CIFAR."""
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    base: dict[str, object] = dict(
        scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_kernel_size=kernel
    )
    base.update(overrides)
    return ViewConfig(**base).validate()  # type: ignore[arg-type]


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def sample_view_params(
    config: ViewConfig,
    batch: int,
    image_size: tuple[int, int],
    size: int | Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> ViewParams:
    """Draw the parameters of one view for each of ``batch`` source images of ``image_size`` (H, W)."""
    config.validate()
    out = _size_pair(size)
    g = generator
    boxes = sample_crop_boxes(batch, image_size[0], image_size[1], config.scale, config.ratio, g, device)
    flip = bernoulli(batch, config.flip_p, g, device)
    applied, factors, order = sample_jitter(
        batch, config.brightness, config.contrast, config.saturation, config.hue, config.jitter_p, g, device
    )
    gray = bernoulli(batch, config.grayscale_p, g, device)
    blur = bernoulli(batch, config.blur_p, g, device)
    sigma = uniform(batch, config.blur_sigma[0], config.blur_sigma[1], g, device)
    kernel = config.blur_kernel_size or ops.gaussian_kernel_size(config.blur_sigma[1])
    kernel = min(kernel, 2 * min(out) - 1)  # reflect padding needs radius < side
    solar = bernoulli(batch, config.solarize_p, g, device)
    rotation = sample_rotation(batch, config.rotations, g, device)
    if out[0] != out[1] and bool((rotation % 2 == 1).any()):
        raise ConfigError(f"views.rotations: odd quarter turns need a square view size, got {out}")
    return ViewParams(
        boxes=boxes,
        size=out,
        antialias=config.antialias,
        flip=flip,
        jitter_applied=applied,
        jitter_factors=factors,
        jitter_order=order,
        grayscale=gray,
        blur_applied=blur,
        blur_sigma=sigma,
        blur_kernel_size=kernel,
        solarize=solar,
        solarize_threshold=config.solarize_threshold,
        rotation=rotation,
        mean=None if config.mean is None else tuple(config.mean),
        std=None if config.std is None else tuple(config.std),
    )


# On CPU, working through the batch in pieces of about this many output bytes keeps the dozens of elementwise
# passes in cache and their buffers in the allocator's free lists (measured at 32 and 64 px: up to 1.6x faster).
_CPU_CHUNK_BYTES = 3 << 20


def apply_view(
    images: Tensor, params: ViewParams, dtype: torch.dtype = torch.float32, chunk_size: int | None = None
) -> Tensor:
    """Build the views of ``images`` (uint8 or float ``(B, 3, H, W)``) from recorded ``params``.

    Deterministic: the same images and parameters give the same views, on the images' device. ``chunk_size``
    samples are processed at a time (default: the whole batch on accelerators, about 3 MiB of output on CPU);
    it changes speed only.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if params.batch_size != images.shape[0]:
        raise ValueError(f"{params.batch_size} parameter rows for {images.shape[0]} images")
    p = params.to(images.device)
    n = images.shape[0]
    if chunk_size is None:
        per_sample = 3 * p.size[0] * p.size[1] * torch.finfo(dtype).bits // 8
        chunk_size = n if images.device.type != "cpu" else max(1, _CPU_CHUNK_BYTES // per_sample)
    if chunk_size >= n:
        return _apply(images, p, dtype)
    out = torch.empty(n, 3, *p.size, dtype=dtype, device=images.device)
    for start in range(0, n, chunk_size):
        part = slice(start, min(n, start + chunk_size))
        out[part] = _apply(images[part], p.select(part), dtype)
    return out


def _apply(images: Tensor, p: ViewParams, dtype: torch.dtype) -> Tensor:
    x = ops.to_float(images, dtype)
    x = ops.resized_crop(x, p.boxes, p.size, antialias=p.antialias, flip=p.flip)
    if bool(p.jitter_applied.any()):
        x = ops.color_jitter(x, p.jitter_factors, p.jitter_order, p.jitter_applied)
    if bool(p.grayscale.any()):
        x = ops.grayscale(x, p.grayscale)
    idx = torch.nonzero(p.blur_applied).squeeze(1)
    if idx.numel():  # blur only the samples that draw it: about half the batch in MoCo v2
        x[idx] = ops.gaussian_blur(x[idx], p.blur_sigma[idx], p.blur_kernel_size)
    if bool(p.solarize.any()):
        x = ops.solarize(x, p.solarize_threshold, p.solarize)
    if bool((p.rotation % 4 != 0).any()):
        x = ops.rot90(x, p.rotation)
    if p.mean is not None and p.std is not None:
        x = ops.normalize(x, p.mean, p.std)
    return x


def make_views(
    images: Tensor,
    size: int | Sequence[int],
    generator: torch.Generator | None,
    config: ViewConfig,
    n_views: int = 1,
) -> tuple[list[Tensor], list[ViewParams]]:
    """``n_views`` independently augmented views of every image, and the parameters of each view.

    Parameters are drawn on the generator's device and returned on the images' device.
    """
    views, params = [], []
    for _ in range(n_views):
        shape = (images.shape[-2], images.shape[-1])
        p = sample_view_params(config, images.shape[0], shape, size, generator, images.device)
        params.append(p)
        views.append(apply_view(images, p))
    return views, params


def mocov2_views(
    images: Tensor,
    size: int | Sequence[int],
    generator: torch.Generator | None,
    n_views: int = 2,
    config: ViewConfig | None = None,
) -> tuple[list[Tensor], list[ViewParams]]:
    """MoCo v2 views (PAPERS.md §2.2.2) of uint8 images ``(B, 3, H, W)``: ``n_views`` tensors
    ``(B, 3, size, size)`` normalised with ImageNet mean/std, and their parameters."""
    return make_views(images, size, generator, config or mocov2_config(), n_views)


def simclr_views(
    images: Tensor,
    size: int | Sequence[int],
    generator: torch.Generator | None,
    n_views: int = 2,
    config: ViewConfig | None = None,
) -> tuple[list[Tensor], list[ViewParams]]:
    """SimCLR views (see :func:`simclr_config`); otherwise as :func:`mocov2_views`."""
    return make_views(images, size, generator, config or simclr_config(max(_size_pair(size))), n_views)


@dataclass
class Views:
    """A callable recipe object for plain PyTorch loops: ``views, params = Views(mocov2_config(), 32)(x, g)``."""

    config: ViewConfig = field(default_factory=ViewConfig)
    size: int | tuple[int, int] = 224
    n_views: int = 2

    def __call__(
        self, images: Tensor, generator: torch.Generator | None
    ) -> tuple[list[Tensor], list[ViewParams]]:
        return make_views(images, self.size, generator, self.config, self.n_views)


__all__ = [
    "ViewConfig",
    "Views",
    "apply_view",
    "make_views",
    "mocov2_config",
    "mocov2_views",
    "sample_view_params",
    "simclr_config",
    "simclr_views",
]
