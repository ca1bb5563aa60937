"""LooC's leave-one-out view sampler (Xiao et al. 2021; PAPERS.md §3.2): a query and ``n + 1`` keys per image.

With atomic augmentations ``A_1..A_n`` (a subset of colour, rotation, texture, in the configured order) and
parameters ``a = (a_1..a_n)``:

* query ``q = T(I; a^q)``;
* key ``k_0 = T(I; a^0)``: every atomic parameter drawn anew (independently of ``a^q``);
* key ``k_i = T(I; a^i)`` for ``i = 1..n``: ``a^i_i = a^q_i`` (shares augmentation i with the query), every
  other atomic parameter drawn anew. So ``k_i`` differs from ``q`` in every augmentation except ``A_i`` (not
  the inverted convention of one third-party ``LooCTransform``).

The common augmentations (random resized crop and horizontal flip, plus blur and solarize when the view config
turns them on) are drawn anew for every view. An atomic augmentation that is not in the list is not applied
at all: ``augs=[rotation]`` means no colour jitter. Parameters are per sample and drawn from an explicit
generator, batched, on the generator's device; the views are built on the images' device.

The atomic parameters: ``colour`` = ColorJitter (``jitter_applied``, ``jitter_factors``, ``jitter_order``)
plus RandomGrayscale (``grayscale``) of :class:`ViewParams`; ``rotation`` = ``rotation`` (quarter turns);
``texture`` = every tensor of :class:`~invarlab.views.texture.TextureParams`.

The pipeline of one view: crop + flip → colour jitter → grayscale → blur → solarize → texture → rotation →
normalise (:func:`apply_looc_view`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from invarlab.errors import ConfigError
from invarlab.views import ops
from invarlab.views.params import ViewParams
from invarlab.views.recipes import ViewConfig, apply_view, sample_view_params
from invarlab.views.texture import TextureConfig, TextureParams, apply_texture, sample_texture

__all__ = [
    "ATOMIC_FIELDS",
    "LOOC_AUGMENTATIONS",
    "LoocViewConfig",
    "LoocViewParams",
    "LoocViews",
    "apply_looc_view",
    "canonical_augs",
    "looc_views",
    "sample_looc_params",
]

LOOC_AUGMENTATIONS = ("colour", "rotation", "texture")
_SPELLINGS = {"color": "colour", "colour": "colour", "rotation": "rotation", "texture": "texture"}
# The ViewParams fields that make up each atomic augmentation (texture lives in TextureParams).
ATOMIC_FIELDS: dict[str, tuple[str, ...]] = {
    "colour": ("jitter_applied", "jitter_factors", "jitter_order", "grayscale"),
    "rotation": ("rotation",),
    "texture": ("applied", "gain", "amplitude", "frequency", "orientation", "phase"),
}


def canonical_augs(augs: Sequence[str]) -> tuple[str, ...]:
    """The atomic augmentations in the given order, ``color`` spelled ``colour``; raises ``ConfigError`` on an
    unknown or repeated name."""
    out: list[str] = []
    for name in augs:
        key = _SPELLINGS.get(str(name).lower())
        if key is None:
            raise ConfigError(
                f"method.looc_augs: unknown augmentation {name!r}; use some of {', '.join(LOOC_AUGMENTATIONS)}"
            )
        if key in out:
            raise ConfigError(f"method.looc_augs: {key!r} is listed twice; list each augmentation once")
        out.append(key)
    return tuple(out)


@dataclass
class LoocViewConfig:
    """Options of the LooC sampler.

    ``view`` supplies the common augmentations (crop scale and ratio, flip, blur, solarize, normalisation) and
    the colour strengths (jitter and grayscale probabilities); its ``rotations`` is ignored: rotation comes from
    ``rotations`` here when ``rotation`` is in ``augs``. ``leave_one_out=False`` samples only ``q`` and ``k_0``
    (two independently augmented views): MoCo with the same augmentations.
    """

    augs: tuple[str, ...] = ("colour", "rotation")
    view: ViewConfig = field(default_factory=ViewConfig)
    rotations: tuple[int, ...] = (0, 1, 2, 3)  # quarter turns, drawn uniformly
    texture: TextureConfig = field(default_factory=TextureConfig)
    leave_one_out: bool = True

    def validate(self) -> LoocViewConfig:
        self.augs = canonical_augs(self.augs)
        if not self.rotations or any(r not in (0, 1, 2, 3) for r in self.rotations):
            raise ConfigError(
                f"method.looc_rotations: expected quarter turns in 0..3, got {list(self.rotations)}"
            )
        self.view.validate()
        self.texture.validate()
        return self

    @property
    def num_keys(self) -> int:
        """Keys per image: ``n + 1`` (``k_0..k_n``), or 1 without leave-one-out."""
        return len(self.augs) + 1 if self.leave_one_out else 1

    def base_view_config(self) -> ViewConfig:
        """The :class:`ViewConfig` every view draws from: colour off unless listed, rotation from ``rotations``
        if listed, else none."""
        changes: dict[str, object] = {"rotations": tuple(self.rotations) if "rotation" in self.augs else (0,)}
        if "colour" not in self.augs:
            changes.update(jitter_p=0.0, grayscale_p=0.0)
        return replace(self.view, **changes)


@dataclass(frozen=True)
class LoocViewParams:
    """The parameters of one view of a batch: the common and colour / rotation ones, and the texture."""

    view: ViewParams
    texture: TextureParams

    def atomic(self, aug: str) -> dict[str, Tensor]:
        """The tensors of atomic augmentation ``aug`` (``colour``, ``rotation`` or ``texture``), by field."""
        source = self.texture if aug == "texture" else self.view
        return {name: getattr(source, name) for name in ATOMIC_FIELDS[aug]}

    def with_atomic(self, aug: str, other: LoocViewParams) -> LoocViewParams:
        """These parameters with augmentation ``aug``'s taken from ``other`` (the same tensors, not copies)."""
        shared = other.atomic(aug)
        if aug == "texture":
            return replace(self, texture=replace(self.texture, **shared))
        return replace(self, view=replace(self.view, **shared))

    def to(self, device: torch.device | str) -> LoocViewParams:
        return LoocViewParams(self.view.to(device), self.texture.to(device))


@dataclass
class LoocViews:
    """``views[0]`` is the query, ``views[1 + i]`` the key ``k_i`` (``i = 0..n``); ``params`` likewise."""

    views: list[Tensor]
    params: list[LoocViewParams]
    augs: tuple[str, ...]

    @property
    def query(self) -> Tensor:
        return self.views[0]

    @property
    def keys(self) -> list[Tensor]:
        return self.views[1:]


def sample_looc_params(
    config: LoocViewConfig,
    batch: int,
    image_size: tuple[int, int],
    size: int | Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> list[LoocViewParams]:
    """``[q, k_0, k_1..k_n]`` parameters for ``batch`` images of ``image_size`` (H, W), as the module says.

    Every view draws a full parameter set (common, colour, rotation, texture) in that order, so the number of
    draws depends only on the batch and the number of views; ``k_i`` then takes augmentation ``i``'s parameters
    from ``q``.
    """
    config.validate()
    base = config.base_view_config()
    active_texture = "texture" in config.augs
    out = []
    for _ in range(1 + config.num_keys):
        view = sample_view_params(base, batch, image_size, size, generator, device)
        tex = sample_texture(batch, config.texture, generator, device, active=active_texture)
        out.append(LoocViewParams(view, tex))
    if config.leave_one_out:
        query = out[0]
        for i, aug in enumerate(config.augs, start=1):
            out[1 + i] = out[1 + i].with_atomic(aug, query)
    return out


def apply_looc_view(images: Tensor, params: LoocViewParams, dtype: torch.dtype = torch.float32) -> Tensor:
    """One view of uint8 or float ``images`` ``(B, 3, H, W)`` from recorded ``params`` (deterministic)."""
    p = params.view
    # apply_view does crop, colour, grayscale, blur and solarize; texture goes before rotation and normalise.
    x = apply_view(images, replace(p, rotation=torch.zeros_like(p.rotation), mean=None, std=None), dtype)
    x = apply_texture(x, params.texture)
    rotation = p.rotation.to(x.device)
    if bool((rotation % 4 != 0).any()):
        x = ops.rot90(x, rotation)
    if p.mean is not None and p.std is not None:
        x = ops.normalize(x, p.mean, p.std)
    return x


def looc_views(
    images: Tensor, size: int | Sequence[int], generator: torch.Generator | None, config: LoocViewConfig
) -> LoocViews:
    """The query and keys ``[q, k_0, k_1..k_n]`` of uint8 ``images`` ``(B, 3, H, W)`` and their parameters
    (on the images' device)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    shape = (int(images.shape[-2]), int(images.shape[-1]))
    params = sample_looc_params(config, images.shape[0], shape, size, generator, images.device)
    return LoocViews([apply_looc_view(images, p) for p in params], params, tuple(config.augs))
