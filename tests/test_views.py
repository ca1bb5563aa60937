"""invarlab.views against torchvision's transforms v2 functional ops, sample by sample.

Differences are mean absolute differences on the uint8 scale (0-255). Two references:
- float: torchvision on the same float images; only rounding and the 0.299 vs 0.2989 luma weight differ.
- uint8: torchvision on the uint8 images, rounding to integers as a uint8 dataloader pipeline does.
"""

from __future__ import annotations

import math

import pytest
import torch

from invarlab.errors import ConfigError
from invarlab.views import (
    ViewConfig,
    ViewParams,
    apply_view,
    mocov2_config,
    mocov2_views,
    ops,
    sample_crop_boxes,
    sample_jitter,
    sample_view_params,
    simclr_views,
)
from invarlab.views.params import bernoulli, sample_rotation
from torchvision_compat import import_torchvision

import_torchvision()
from torchvision.transforms import RandomResizedCrop  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

B, H, W = 4, 40, 48


def _images(seed: int = 0, h: int = H, w: int = W) -> torch.Tensor:
    """uint8 (B, 3, h, w): smooth colour fields (hue and contrast matter) plus pixel noise (resampling matters)."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(B, 3, 5, 6, generator=g), size=(h, w), mode="bicubic")
    noisy = smooth + 0.15 * torch.randn(B, 3, h, w, generator=g)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean() * 255)


def _per_sample(ref, x: torch.Tensor, *args_per_sample) -> torch.Tensor:  # type: ignore[no-untyped-def]
    out = [ref(x[i], *[float(a[i]) for a in args_per_sample]) for i in range(x.shape[0])]
    out = torch.stack(out)
    return out.float() / 255 if out.dtype == torch.uint8 else out


X8 = _images()
X = ops.to_float(X8)
FACTORS = torch.tensor([0.6, 1.0, 1.4, 0.75])
HUES = torch.tensor([-0.1, 0.05, 0.0, 0.45])

# op name -> (ours, torchvision, per-sample args, float tolerance, uint8 tolerance)
COLOUR_CASES = {
    "brightness": (ops.adjust_brightness, TF.adjust_brightness, FACTORS, 1e-3, 0.5),
    "contrast": (ops.adjust_contrast, TF.adjust_contrast, FACTORS, 0.05, 0.6),
    "saturation": (ops.adjust_saturation, TF.adjust_saturation, FACTORS, 0.05, 0.6),
    "hue": (ops.adjust_hue, TF.adjust_hue, HUES, 0.01, 1.0),
}


@pytest.mark.parametrize("name", list(COLOUR_CASES))
def test_colour_ops_match_torchvision(name: str) -> None:
    ours, ref, args, tol_float, tol_uint8 = COLOUR_CASES[name]
    out = ours(X, args)
    assert out.shape == X.shape and out.dtype == X.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert _mad(out, _per_sample(ref, X, args)) < tol_float
    assert _mad(out, _per_sample(ref, X8, args)) < tol_uint8


def test_grayscale_flip_rotation_solarize_normalize_match_torchvision() -> None:
    mask = torch.tensor([True, False, True, False])
    ref = torch.stack([TF.rgb_to_grayscale(X[i], 3) if mask[i] else X[i] for i in range(B)])
    assert _mad(ops.grayscale(X, mask), ref) < 0.05  # 0.299 vs torchvision's 0.2989 red weight
    ref = torch.stack([TF.horizontal_flip(X[i]) if mask[i] else X[i] for i in range(B)])
    assert torch.equal(ops.hflip(X, mask), ref)
    square = X[..., :, :H]
    k = torch.tensor([0, 1, 2, 3])
    ref = torch.stack([TF.rotate(square[i], 90.0 * int(k[i])) for i in range(B)])
    assert torch.equal(ops.rot90(square, k), ref)
    thresholds = torch.tensor([0.2, 0.5, 0.7, 1.0])
    assert torch.equal(ops.solarize(X, thresholds), _per_sample(TF.solarize, X, thresholds))
    assert _mad(ops.solarize(X, 0.5), _per_sample(TF.solarize, X8, torch.full((B,), 128.0))) < 1e-3
    ref = TF.normalize(X, list(ops.IMAGENET_MEAN), list(ops.IMAGENET_STD))
    torch.testing.assert_close(ops.normalize(X), ref)
    with pytest.raises(ValueError, match="square"):
        ops.rot90(X, k)


@pytest.mark.parametrize("kernel_size", [3, 13])
def test_gaussian_blur_matches_torchvision(kernel_size: int) -> None:
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = ops.gaussian_blur(X, sigma, kernel_size)
    ref = torch.stack([TF.gaussian_blur(X[i], [kernel_size] * 2, [float(sigma[i])] * 2) for i in range(B)])
    assert _mad(out, ref) < 0.01
    ref8 = torch.stack([TF.gaussian_blur(X8[i], [kernel_size] * 2, [float(sigma[i])] * 2) for i in range(B)])
    assert _mad(out, ref8.float() / 255) < 0.5
    assert ops.gaussian_kernel_size(2.0) == 13 and ops.gaussian_kernel_size(0.1) == 3


# top, left, height, width: whole image, downscale, upscale, partly outside the image (zero padding)
BOXES = torch.tensor([[0, 0, 40, 48], [3, 5, 30, 36], [10, 2, 7, 9], [-3, -4, 45, 50]])


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (16, 24), (64, 56)])
def test_resized_crop_matches_torchvision(antialias: bool, size: tuple[int, int]) -> None:
    out = ops.resized_crop(X, BOXES, size, antialias=antialias)
    assert out.shape == (B, 3, *size)

    def ref(images: torch.Tensor) -> torch.Tensor:
        views = [
            TF.resized_crop(images[i], *[int(v) for v in BOXES[i]], list(size), antialias=antialias)
            for i in range(B)
        ]
        views = torch.stack(views)
        return views.float() / 255 if views.dtype == torch.uint8 else views

    assert _mad(out, ref(X)) < 0.01
    assert _mad(out, ref(X8)) < 0.6
    flip = torch.tensor([True, False, False, True])
    assert _mad(ops.resized_crop(X, BOXES, size, antialias=antialias, flip=flip), ops.hflip(out, flip)) < 1e-3


def test_color_jitter_order_matches_sequential_torchvision() -> None:
    g = torch.Generator().manual_seed(3)
    applied, factors, order = sample_jitter(B, 0.4, 0.4, 0.4, 0.1, 0.75, g)
    applied[0] = True
    out = ops.color_jitter(X, factors, order, applied)
    refs = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(B):
        ref = X[i]
        if applied[i]:
            for op in order[i].tolist():
                ref = refs[op](ref, float(factors[i, op]))
        assert _mad(out[i], ref) < 0.05, i
    assert torch.equal(ops.color_jitter(X, factors, order, torch.zeros(B, dtype=torch.bool)), X)


# ----------------------------------------------------------------------------------------------- parameters


def test_crop_boxes_statistics_match_torchvision_random_resized_crop() -> None:
    n, scale, ratio = 3000, (0.2, 1.0), (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(n, H, W, scale, ratio, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all())
    area, aspect = h * w / (H * W), w / h
    # rounding h and w to pixels moves area and ratio by a few percent at this size
    assert float(area.min()) > scale[0] * 0.9 and float(area.max()) <= 1.0
    assert float(aspect.min()) > ratio[0] * 0.95 and float(aspect.max()) < ratio[1] * 1.05
    assert torch.equal(boxes, boxes.round())
    torch.manual_seed(0)
    image = torch.zeros(3, H, W)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    ).float()
    r_area, r_aspect = ref[:, 2] * ref[:, 3] / (H * W), ref[:, 3] / ref[:, 2]
    for ours, theirs in ((area, r_area), (aspect, r_aspect)):
        se = math.sqrt(ours.var() / n + theirs.var() / n)
        assert abs(float(ours.mean() - theirs.mean())) < 4 * se
    # placement uniform over the free range
    free = (H - h).clamp(min=1)
    assert abs(float((top / free)[H - h > 0].mean()) - 0.5) < 0.03


def test_crop_fallback_is_torchvision_centre_crop() -> None:
    boxes = sample_crop_boxes(5, H, W, (1.0, 1.0), (2.0, 3.0), torch.Generator().manual_seed(0))
    ref = RandomResizedCrop.get_params(torch.zeros(3, H, W), [1.0, 1.0], [2.0, 3.0])
    assert boxes.tolist() == [list(map(float, ref))] * 5


def test_flags_jitter_and_rotation_statistics() -> None:
    g = torch.Generator().manual_seed(1)
    n = 20000
    for p in (0.0, 0.2, 0.5, 1.0):
        assert abs(float(bernoulli(n, p, g).float().mean()) - p) < 0.015
    applied, factors, order = sample_jitter(n, 0.4, 0.3, 0.0, 0.1, 0.8, g)
    assert abs(float(applied.float().mean()) - 0.8) < 0.015
    lo = torch.tensor([0.6, 0.7, 1.0, -0.1])
    hi = torch.tensor([1.4, 1.3, 1.0, 0.1])
    assert bool(((factors >= lo) & (factors <= hi)).all())
    assert bool((factors[:, 2] == 1.0).all())  # a disabled component is the identity
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    first_op = torch.bincount(order[:, 0], minlength=4).float() / n
    assert bool(((first_op - 0.25).abs() < 0.02).all())
    k = sample_rotation(n, (0, 1, 2, 3), g)
    assert bool(((torch.bincount(k, minlength=4).float() / n - 0.25).abs() < 0.02).all())


def test_same_generator_seed_gives_same_views() -> None:
    a_views, a_params = mocov2_views(X8, 32, torch.Generator().manual_seed(7))
    b_views, b_params = mocov2_views(X8, 32, torch.Generator().manual_seed(7))
    c_views, _ = mocov2_views(X8, 32, torch.Generator().manual_seed(8))
    for a, b in zip(a_views, b_views, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(a_params[1].boxes, b_params[1].boxes)
    assert not torch.equal(a_views[0], c_views[0])
    assert not torch.equal(a_views[0], a_views[1])  # views of one image differ


# ----------------------------------------------------------------------------------------------- recipes


def test_mocov2_recipe_shapes_and_normalisation() -> None:
    views, params = mocov2_views(X8, 32, torch.Generator().manual_seed(0), n_views=3)
    assert len(views) == len(params) == 3
    mean = torch.tensor(ops.IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(ops.IMAGENET_STD).reshape(1, 3, 1, 1)
    for v, p in zip(views, params, strict=True):
        assert v.shape == (B, 3, 32, 32) and v.dtype == torch.float32
        raw = v * std + mean
        assert float(raw.min()) > -1e-5 and float(raw.max()) < 1 + 1e-5
        assert p.size == (32, 32) and p.batch_size == B and p.blur_kernel_size == 13
    cfg = mocov2_config()
    assert (cfg.scale, cfg.brightness, cfg.hue, cfg.jitter_p, cfg.grayscale_p) == (
        (0.2, 1.0),
        0.4,
        0.1,
        0.8,
        0.2,
    )
    assert (cfg.blur_sigma, cfg.blur_p, cfg.flip_p) == ((0.1, 2.0), 0.5, 0.5)
    s_views, s_params = simclr_views(X8, 24, torch.Generator().manual_seed(0))
    assert s_views[0].shape == (B, 3, 24, 24) and s_params[0].blur_kernel_size == 3


def test_recorded_params_reproduce_views_and_match_torchvision_pipeline() -> None:
    config = mocov2_config(jitter_p=0.75, grayscale_p=0.5, solarize_p=0.5, rotations=(0, 1, 2, 3))
    views, params = mocov2_views(X8, 32, torch.Generator().manual_seed(5), n_views=2, config=config)
    for view, p in zip(views, params, strict=True):
        assert torch.equal(apply_view(X8, p), view)
        parts = [apply_view(X8[i : i + 1], p.select(slice(i, i + 1))) for i in range(B)]
        torch.testing.assert_close(torch.cat(parts), view)
        refs = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for i in range(B):  # the same parameters through torchvision, in MoCo v2's order
            ref = TF.resized_crop(X[i], *[int(v) for v in p.boxes[i]], list(p.size), antialias=True)
            if p.jitter_applied[i]:
                for op in p.jitter_order[i].tolist():
                    ref = refs[op](ref, float(p.jitter_factors[i, op]))
            if p.grayscale[i]:
                ref = TF.rgb_to_grayscale(ref, 3)
            if p.blur_applied[i]:
                ref = TF.gaussian_blur(ref, [p.blur_kernel_size] * 2, [float(p.blur_sigma[i])] * 2)
            if p.flip[i]:
                ref = TF.horizontal_flip(ref)
            if p.solarize[i]:
                ref = TF.solarize(ref, p.solarize_threshold)
            ref = TF.rotate(ref, 90.0 * int(p.rotation[i]))
            ref = TF.normalize(ref, list(p.mean), list(p.std))
            std = torch.tensor(p.std)[:, None, None]  # compare on the [0, 1] scale
            assert _mad(view[i] * std, ref * std) < 0.05  # measured worst 0.022 over 5 seeds


def test_view_params_select_cat_and_config_validation() -> None:
    p = sample_view_params(ViewConfig(), B, (H, W), 16, torch.Generator().manual_seed(0))
    both = ViewParams.cat([p.select(slice(0, 2)), p.select(torch.tensor([2, 3]))])
    assert torch.equal(both.boxes, p.boxes) and torch.equal(both.jitter_order, p.jitter_order)
    assert torch.equal(p.select(p.flip).flip, p.flip[p.flip])
    with pytest.raises(ConfigError, match=r"views\.grayscale_p"):
        mocov2_config(grayscale_p=1.5)
    with pytest.raises(ConfigError, match=r"views\.blur_kernel_size"):
        mocov2_config(blur_kernel_size=4)
    with pytest.raises(ConfigError, match="square"):
        sample_view_params(ViewConfig(rotations=(1,)), B, (H, W), (16, 24), torch.Generator())
