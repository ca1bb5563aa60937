"""ImageNet-C-style corruption robustness (Hendrycks & Dietterich 2019): severities, ``corrupt``, evaluation, sheet.

The parameters of :data:`SEVERITIES` are ImageNet-C's, for 224 x 224 images. Parameters in pixels (blur radii and
sigmas, fog and frost feature sizes) are multiplied by ``scale = min(H, W) / 224`` so that a corruption looks
the same relative to the image at any resolution; the others (noise levels, contrast and brightness, pixelation
factor, JPEG quality) do not depend on the size. ``docs/corruptions.md`` lists every formula and each difference
from ImageNet-C. The ops themselves are in :mod:`invarlab.eval.corruption_ops`.

This module never imports models or training: :func:`corruption_robustness` takes the caller's ``featurize``
and ``classify`` callables.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invarlab.eval import corruption_ops as cops

REFERENCE_SIDE = 224  # the image side ImageNet-C's parameters were chosen for

# Per corruption, the ImageNet-C parameters of severities 1..5 at 224 x 224 (make_imagenet_c.py).
SEVERITIES: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # sigma
    "shot_noise": (60, 25, 12, 5, 3),  # photons at white
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # fraction of elements set to 0 or 1
    "defocus_blur": (3, 4, 6, 8, 10),  # disk radius, pixels (ImageNet-C's alias blur is replaced by coverage)
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # (radius, sigma), pixels
    "gaussian_blur": (1, 2, 3, 4, 6),  # sigma, pixels (an ImageNet-C "extra" corruption)
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor towards the channel means
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to HSV value
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),  # side factor of the box-downscaled image
    "jpeg_compression": (25, 18, 15, 10, 7),  # JPEG quality
    "fog": ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),  # (strength, decay)
    "frost": ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),  # (image weight, frost weight)
}

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "motion_blur", "gaussian_blur"),
    "weather": ("fog", "frost", "brightness"),
    "digital": ("contrast", "pixelate", "jpeg_compression"),
}

# The default evaluation set: ImageNet-C's 15 minus glass, zoom and elastic blur/transform and snow (not built).
DEFAULT_CORRUPTIONS = tuple(name for name in SEVERITIES if name != "gaussian_blur")

FOG_MAP_SIDE = 256  # ImageNet-C's plasma map for 224-pixel images; its coarsest cell, in reference pixels
MOTION_ANGLE_DEG = 45.0  # motion blur angle uniform in [-45, 45] degrees, as ImageNet-C


def _gaussian_noise(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.gaussian_noise(images, p, g)


def _shot_noise(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.shot_noise(images, p, g)


def _impulse_noise(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.impulse_noise(images, p, g)


def _defocus_blur(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.defocus_blur(images, p * scale)


def _motion_blur(images: Tensor, p: tuple[float, float], g: torch.Generator, scale: float) -> Tensor:
    u = torch.rand(images.shape[0], generator=g, device=g.device).to("cpu", torch.float64)
    angles = torch.deg2rad((2.0 * u - 1.0) * MOTION_ANGLE_DEG)
    return cops.motion_blur(images, p[0] * scale, p[1] * scale, angles)


def _gaussian_blur(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.gaussian_blur(images, p * scale)


def _contrast(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.contrast(images, p)


def _brightness(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.brightness(images, p)


def _pixelate(images: Tensor, p: float, g: torch.Generator, scale: float) -> Tensor:
    return cops.pixelate(images, p)


def _jpeg(images: Tensor, p: int, g: torch.Generator, scale: float) -> Tensor:
    return cops.jpeg(images, p)


def _fog(images: Tensor, p: tuple[float, float], g: torch.Generator, scale: float) -> Tensor:
    return cops.fog(images, p[0], p[1], FOG_MAP_SIDE * scale, g)


def _frost(images: Tensor, p: tuple[float, float], g: torch.Generator, scale: float) -> Tensor:
    return cops.frost(images, p[0], p[1], scale, g)


# name -> fn(images, severity parameters, generator, scale): the parameters are SEVERITIES[name][severity - 1].
CorruptionFn = Callable[[Tensor, Any, torch.Generator, float], Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
    "fog": _fog,
    "frost": _frost,
}


def spatial_scale(images: Tensor) -> float:
    """``min(H, W) / 224``: the factor applied to every parameter measured in pixels."""
    return min(images.shape[-2:]) / REFERENCE_SIDE


def corrupt(
    images: Tensor,
    name: str,
    severity: int,
    generator: torch.Generator | None = None,
    scale: float | None = None,
) -> Tensor:
    """Corrupt float images ``(B, 3, H, W)`` in ``[0, 1]`` with corruption ``name`` at ``severity`` (0 to 5).

    Severity 0 returns the images unchanged (a copy). ``generator`` supplies all randomness (``None``: a fresh
    generator seeded with 0, so calls are reproducible by default); ``scale`` overrides
    :func:`spatial_scale` for parameters in pixels. Shape, dtype and device are kept; half-precision images
    are corrupted in float32.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {sorted(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an integer from 0 (clean) to 5, got {severity!r}")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be float (B, 3, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}; "
            "convert uint8 images with invarlab.views.ops.to_float"
        )
    if severity == 0:
        return images.clone()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    scale = spatial_scale(images) if scale is None else float(scale)
    out = CORRUPTIONS[name](work, SEVERITIES[name][int(severity) - 1], generator, scale)
    return out.to(images.dtype)


# ----------------------------------------------------------------------------------------------------- evaluation


def stream_seed(seed: int, name: str, severity: int) -> int:
    """Seed of the generator for one (corruption, severity): fixed by ``seed``, the name and the severity alone,
    so a result does not depend on which other corruptions are evaluated or in which order."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 8 + int(severity)) % (2**63)


def corruption_robustness(
    featurize: Callable[[Tensor], Any],
    classify: Callable[[Any], Any],
    images: Tensor,
    labels: Tensor | Sequence[int] | np.ndarray,
    names: Sequence[str] = DEFAULT_CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    batch_size: int = 256,
    seed: int = 0,
    scale: float | None = None,
) -> dict[str, Any]:
    """Accuracy on clean and corrupted ``images`` for every corruption in ``names`` and severity.

    ``images`` are ``(N, 3, H, W)``, uint8 or float in ``[0, 1]``; each batch of ``batch_size`` is corrupted,
    passed to ``featurize`` as float32 in ``[0, 1]`` (normalisation is the caller's), and the features to
    ``classify``, which returns predicted labels. Accuracy is the fraction with prediction equal to the label.
    Every (corruption, severity) draws from its own generator seeded by :func:`stream_seed`. Returns, for
    ``invarlab.results.record_result(run_dir, "corruptions", representation, values)``::

        {"clean": acc, "mean": mean over all corruptions and severities, "severities": [1, ..., 5],
         "per_corruption": {name: {"accuracy": [acc at each severity], "mean": acc}},
         "per_family": {family: mean of its corruptions' means}}
    """
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; choose from {sorted(CORRUPTIONS)}")
    bad = [s for s in severities if not 1 <= int(s) <= 5]
    if bad or not severities:
        raise ValueError(f"severities must be a non-empty list of integers in 1..5, got {list(severities)}")
    labels_t = torch.as_tensor(np.asarray(_to_numpy(labels))).reshape(-1).long()
    if images.ndim != 4 or images.shape[0] != labels_t.shape[0]:
        raise ValueError(
            f"images {tuple(images.shape)} and labels ({labels_t.shape[0]},) must match in length"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def accuracy(name: str | None, severity: int) -> float:
        generator = torch.Generator().manual_seed(stream_seed(seed, name or "clean", severity))
        correct = 0
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
            if name is not None:
                batch = corrupt(batch, name, severity, generator, scale)
            with torch.no_grad():
                predicted = torch.as_tensor(np.asarray(_to_numpy(classify(featurize(batch))))).reshape(-1)
            correct += int((predicted.long() == labels_t[start : start + batch_size]).sum())
        return correct / images.shape[0]

    per_corruption = {}
    for name in names:
        accs = [accuracy(name, int(s)) for s in severities]
        per_corruption[name] = {"accuracy": accs, "mean": float(np.mean(accs))}
    per_family = {}
    for family, members in FAMILIES.items():
        present = [per_corruption[m]["mean"] for m in members if m in per_corruption]
        if present:
            per_family[family] = float(np.mean(present))
    all_accs = [a for entry in per_corruption.values() for a in entry["accuracy"]]
    return {
        "clean": accuracy(None, 0),
        "mean": float(np.mean(all_accs)) if all_accs else math.nan,
        "severities": [int(s) for s in severities],
        "per_corruption": per_corruption,
        "per_family": per_family,
    }


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else value


# ----------------------------------------------------------------------------------------------------- contact sheet


def corruption_sheet(
    image: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    names: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = (0, 1, 2, 3, 4, 5),
    seed: int = 0,
    zoom: int = 1,
    scale: float | None = None,
) -> None:
    """Write a PNG grid: one row per corruption, one column per severity, row and column labels.

    ``image`` is ``(3, H, W)`` (tensor, uint8 or float in ``[0, 1]``) or ``(H, W, 3)`` uint8 (numpy, e.g. from
    ``skimage.data``); ``zoom`` enlarges each cell by nearest-neighbour repetition so small images stay visible.
    """
    from PIL import Image, ImageDraw

    x = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if x.ndim == 3 and x.shape[-1] == 3 and x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) or (H, W, 3), got {tuple(x.shape)}")
    x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float())[None]
    h, w = x.shape[-2] * zoom, x.shape[-1] * zoom
    label_w, label_h, gap = 110, 16, 2
    sheet = Image.new(
        "RGB", (label_w + len(severities) * (w + gap), label_h + len(names) * (h + gap)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for col, severity in enumerate(severities):
        draw.text((label_w + col * (w + gap) + 2, 2), f"severity {severity}", fill="black")
    for row, name in enumerate(names):
        top = label_h + row * (h + gap)
        draw.text((2, top + h // 2 - 6), name, fill="black")
        for col, severity in enumerate(severities):
            generator = torch.Generator().manual_seed(stream_seed(seed, name, severity))
            cell = corrupt(x, name, int(severity), generator, scale)[0]
            array = (cell * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            array = array.repeat(zoom, axis=0).repeat(zoom, axis=1)
            sheet.paste(Image.fromarray(array), (label_w + col * (w + gap), top))
    sheet.save(os.fspath(path), format="PNG")


__all__ = [
    "CORRUPTIONS",
    "DEFAULT_CORRUPTIONS",
    "FAMILIES",
    "REFERENCE_SIDE",
    "SEVERITIES",
    "corrupt",
    "corruption_robustness",
    "corruption_sheet",
    "spatial_scale",
    "stream_seed",
]
