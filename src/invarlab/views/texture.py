"""LooC's texture augmentation: a batched, per-sample random re-texturing of float images in ``[0, 1]``.

PAPERS.md §3.6 leaves the paper's texture method **[N/A]**. This is our own, made of plain torch ops so that it
runs batched on the training device and is fully determined by a few numbers per sample (which LooC shares
between the query and the texture key). For sample ``b`` with ``applied_b`` true:

1. **Re-weighting of the image's own fine texture.** With ``base = G_σ * x`` (Gaussian blur, ``σ`` =
   ``detail_sigma`` output pixels, reflect padding) and the detail ``x − base``,

       x' = base + g_b (x − base),   g_b ~ U[detail_gain]

   ``g < 1`` smooths the existing texture away, ``g > 1`` sharpens / exaggerates it, ``g = 1`` keeps it.
2. **A random synthetic texture overlaid on the luminance.** ``J`` oriented sinusoidal gratings,

       t_b(r, c) = (1 / J) Σ_j sin(2π f_bj (c cos θ_bj + r sin θ_bj) + φ_bj)
       x'' = clamp(x' + a_b t_b, 0, 1)   (the same t_b added to R, G and B)

   with ``f_bj ~ U[frequency]`` cycles per output pixel, ``θ_bj ~ U[0, π)``, ``φ_bj ~ U[0, 2π)``,
   ``a_b ~ U[amplitude]``, and ``(r, c)`` the row and column index of the pixel in the view.

Samples with ``applied_b`` false are returned unchanged. The overlay is grey, so the op changes texture (local,
high-frequency structure) while leaving colour statistics nearly alone; the colour augmentation is separate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from invarlab.errors import ConfigError
from invarlab.views import ops

__all__ = ["TextureConfig", "TextureParams", "apply_texture", "sample_texture", "texture"]


@dataclass
class TextureConfig:
    """Options of the texture augmentation (module docstring). Every value is our choice (**[N/A]** in the
    paper); the defaults change the texture visibly at 32-224 px without hiding the object."""

    p: float = 0.8  # probability that a view is re-textured
    detail_gain: tuple[float, float] = (0.0, 2.0)  # g: gain of the image's own detail x - blur(x)
    detail_sigma: float = 1.0  # sigma of the blur that separates detail from base, in output pixels
    gratings: int = 3  # J: sinusoidal gratings summed into the synthetic texture
    frequency: tuple[float, float] = (0.08, 0.35)  # cycles per output pixel (0.5 is the Nyquist limit)
    amplitude: tuple[float, float] = (0.0, 0.15)  # a: overlay strength on the [0, 1] intensity scale

    def validate(self) -> TextureConfig:
        """Raise ``ConfigError`` naming the first bad option; returns ``self``."""
        checks = [
            ("p", 0 <= self.p <= 1, "a probability in [0, 1]"),
            ("detail_gain", 0 <= self.detail_gain[0] <= self.detail_gain[1], "0 <= min <= max"),
            ("detail_sigma", self.detail_sigma > 0, "a value > 0"),
            ("gratings", self.gratings >= 1, "an integer >= 1"),
            ("frequency", 0 < self.frequency[0] <= self.frequency[1] <= 0.5, "0 < min <= max <= 0.5"),
            ("amplitude", 0 <= self.amplitude[0] <= self.amplitude[1], "0 <= min <= max"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"method.looc_texture.{name}: expected {expected}")
        return self


@dataclass(frozen=True)
class TextureParams:
    """The texture of a batch of views: one row per sample (see the module docstring for the symbols)."""

    applied: Tensor  # (B,) bool
    gain: Tensor  # (B,) g
    amplitude: Tensor  # (B,) a
    frequency: Tensor  # (B, J) f, cycles per output pixel
    orientation: Tensor  # (B, J) theta, radians
    phase: Tensor  # (B, J) phi, radians
    sigma: float  # detail blur sigma, output pixels
    kernel_size: int  # odd size of that blur's kernel

    def _map(self, fn) -> TextureParams:  # type: ignore[no-untyped-def]
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> TextureParams:
        return self._map(lambda t: t.to(device))

    def select(self, index: Tensor | slice) -> TextureParams:
        return self._map(lambda t: t[index.to(t.device) if isinstance(index, Tensor) else index])

    @property
    def tensor_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if isinstance(getattr(self, f.name), Tensor))


def sample_texture(
    n: int,
    config: TextureConfig,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    active: bool = True,
) -> TextureParams:
    """Texture parameters for ``n`` views. Draws the same count of values whatever the outcome (also with
    ``active=False``, which only forces ``applied`` to false), so the generator's state depends on ``n`` alone."""
    config.validate()
    gdev = generator.device if generator is not None else torch.device("cpu")
    j = config.gratings
    u = torch.rand(n, 3 + 3 * j, generator=generator, device=gdev)

    def span(x: Tensor, lo_hi: tuple[float, float]) -> Tensor:
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * x

    applied = (u[:, 0] < config.p) & active
    kernel = ops.gaussian_kernel_size(config.detail_sigma)
    dev = device or gdev
    return TextureParams(
        applied=applied.to(dev),
        gain=span(u[:, 1], config.detail_gain).to(dev),
        amplitude=span(u[:, 2], config.amplitude).to(dev),
        frequency=span(u[:, 3 : 3 + j], config.frequency).to(dev),
        orientation=(math.pi * u[:, 3 + j : 3 + 2 * j]).to(dev),
        phase=(2 * math.pi * u[:, 3 + 2 * j :]).to(dev),
        sigma=float(config.detail_sigma),
        kernel_size=kernel,
    )


def texture(
    images: Tensor,
    gain: Tensor,
    amplitude: Tensor,
    frequency: Tensor,
    orientation: Tensor,
    phase: Tensor,
    sigma: float,
    kernel_size: int,
) -> Tensor:
    """Re-texture every sample of float images ``(B, 3, H, W)`` in ``[0, 1]`` (module docstring, steps 1-2).

    ``gain``, ``amplitude``: ``(B,)``; ``frequency``, ``orientation``, ``phase``: ``(B, J)``.
    """
    b, _, h, w = images.shape
    kernel = min(kernel_size, 2 * min(h, w) - 1)  # reflect padding needs radius < side
    dtype, device = images.dtype, images.device
    base = ops.gaussian_blur(images, sigma, kernel)
    out = base + gain.to(device, dtype).view(b, 1, 1, 1) * (images - base)
    rows = torch.arange(h, dtype=dtype, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=dtype, device=device).view(1, 1, 1, w)
    f = frequency.to(device, dtype).view(b, -1, 1, 1)
    theta = orientation.to(device, dtype).view(b, -1, 1, 1)
    phi = phase.to(device, dtype).view(b, -1, 1, 1)
    # (B, J, H, W): one grating per plane; J is small, so the memory is a few views' worth.
    gratings = torch.sin(2 * math.pi * f * (cols * torch.cos(theta) + rows * torch.sin(theta)) + phi)
    pattern = gratings.mean(dim=1, keepdim=True)  # (B, 1, H, W), broadcast over the channels
    return out.add_(amplitude.to(device, dtype).view(b, 1, 1, 1) * pattern).clamp_(0.0, 1.0)


def apply_texture(images: Tensor, params: TextureParams) -> Tensor:
    """:func:`texture` on the samples whose ``params.applied`` is true; the others are returned unchanged."""
    idx = torch.nonzero(params.applied.to(images.device)).squeeze(1)
    if idx.numel() == 0:
        return images
    p = params.to(images.device).select(idx)
    out = images.clone()
    out[idx] = texture(
        images[idx], p.gain, p.amplitude, p.frequency, p.orientation, p.phase, p.sigma, p.kernel_size
    )
    return out
