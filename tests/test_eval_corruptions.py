"""invarlab.eval.corruptions against independent oracles: scipy.ndimage and OpenCV filters, Pillow's BOX resize and
JPEG round trip, skimage's HSV conversion, noise moments, formula identities and properties on natural images."""

from __future__ import annotations

import io
import itertools
import json
import math

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.color
import skimage.data
import skimage.transform
import torch
from PIL import Image

from invarlab.eval import corruption_ops as cops
from invarlab.eval.corruptions import (
    CORRUPTIONS,
    DEFAULT_CORRUPTIONS,
    FAMILIES,
    SEVERITIES,
    corrupt,
    corruption_robustness,
    corruption_sheet,
    stream_seed,
)
from invarlab.results import record_result, results_path

torch.set_num_threads(1)
SIDE = 64
DETERMINISTIC = ("defocus_blur", "gaussian_blur", "contrast", "brightness", "pixelate", "jpeg_compression")
RANDOM = tuple(n for n in CORRUPTIONS if n not in DETERMINISTIC)


def _natural(side: int = SIDE) -> torch.Tensor:
    """(3, 3, side, side) float64: three skimage photographs (astronaut, cat, coffee) resized."""
    photos = (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee())
    resized = [skimage.transform.resize(p, (side, side), anti_aliasing=True) for p in photos]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous()


X = _natural()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample over all pixels and channels."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _laplacian(a: torch.Tensor) -> torch.Tensor:
    c = a[..., 1:-1, 1:-1]
    return 4 * c - a[..., :-2, 1:-1] - a[..., 2:, 1:-1] - a[..., 1:-1, :-2] - a[..., 1:-1, 2:]


def _hf_energy(a: torch.Tensor) -> float:
    return float(_laplacian(a).pow(2).mean())


# --------------------------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_zero_is_identity_and_outputs_keep_range_shape_dtype(name: str) -> None:
    clean = corrupt(X, name, 0, _gen())
    assert torch.equal(clean, X) and clean.data_ptr() != X.data_ptr()
    for severity in range(1, 6):
        out = corrupt(X, name, severity, _gen())
        assert out.shape == X.shape and out.dtype == X.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, X)
    low = corrupt(X[:1].to(torch.bfloat16), name, 3, _gen())
    assert low.dtype == torch.bfloat16 and low.shape == (1, 3, SIDE, SIDE)


# Severity 1 is mild: a similarity to the clean image (1 = identical) stays above the bound. Contrast and fog
# rescale the whole image (their pixel correlation is low by design, as in ImageNet-C) but keep its edges.
MILD = {
    "gaussian_noise": ("corr", 0.85),
    "shot_noise": ("corr", 0.85),
    "impulse_noise": ("corr", 0.85),
    "defocus_blur": ("corr", 0.98),
    "motion_blur": ("corr", 0.96),
    "gaussian_blur": ("corr", 0.999),
    "contrast": ("edges", 0.999),
    "brightness": ("corr", 0.99),
    "pixelate": ("corr", 0.95),
    "jpeg_compression": ("corr", 0.95),
    "fog": ("edges", 0.99),
    "frost": ("corr", 0.9),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_one_is_close_to_identity(name: str) -> None:
    kind, bound = MILD[name]
    out = corrupt(X, name, 1, _gen())
    similarity = _corr(out, X) if kind == "corr" else _corr(_laplacian(out), _laplacian(X))
    assert float(similarity.mean()) >= bound


def _mad(out: torch.Tensor) -> float:
    return float((out - X).abs().mean())


# A statistic of the corrupted images that must grow strictly with the severity (blurs: high frequencies fall;
# contrast: the spread falls; brightness: the mean rises; frost: the correlation with the clean image falls).
MONOTONE = {
    "gaussian_noise": _mad,
    "shot_noise": _mad,
    "impulse_noise": _mad,
    "defocus_blur": lambda out: -_hf_energy(out),
    "motion_blur": lambda out: -_hf_energy(out),
    "gaussian_blur": lambda out: -_hf_energy(out),
    "contrast": lambda out: -float(out.std()),
    "brightness": lambda out: float(out.mean()),
    "pixelate": _mad,
    "jpeg_compression": _mad,
    "frost": lambda out: -float(_corr(out, X).mean()),
}


@pytest.mark.parametrize("name", list(MONOTONE))
def test_statistic_is_monotone_in_severity(name: str) -> None:
    stats = [MONOTONE[name](corrupt(X, name, s, _gen(3))) for s in range(6)]
    assert all(a < b for a, b in itertools.pairwise(stats)), stats


def test_fog_weight_falls_and_roughness_rises_with_severity() -> None:
    """Fog is ``(x + s f) m / (m + s)``: the image weight ``m / (m + s)`` never rises and the fog layer's
    roughness (Laplacian energy over variance; lower decay = more fine structure) never falls, and together they
    change at every step."""
    peak = X.amax(dim=(1, 2, 3), keepdim=True)
    weights, roughness = [], []
    for severity in range(1, 6):
        strength, _ = SEVERITIES["fog"][severity - 1]
        weight = peak / (peak + strength)
        layer = corrupt(X, "fog", severity, _gen(1)) - weight * X  # fog part, exact where nothing clips
        weights.append(float(weight.mean()))
        energy = _laplacian(layer).pow(2).mean(dim=(1, 2, 3)) / layer.var(
            dim=(1, 2, 3)
        )  # per image: scale-free
        roughness.append(float(energy.mean()))
    for i in range(4):
        assert weights[i + 1] <= weights[i] and roughness[i + 1] >= roughness[i] * 0.999
        assert weights[i + 1] < weights[i] or roughness[i + 1] > roughness[i] * 1.05


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_for_a_fixed_generator_seed(name: str) -> None:
    a, b = corrupt(X, name, 4, _gen(7)), corrupt(X, name, 4, _gen(7))
    assert torch.equal(a, b)
    other = corrupt(X, name, 4, _gen(8))
    assert torch.equal(a, other) == (name in DETERMINISTIC)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_equals_each_image_alone(name: str) -> None:
    for severity in (1, 5):
        batch = corrupt(X, name, severity)
        alone = torch.cat([corrupt(X[i : i + 1], name, severity) for i in range(X.shape[0])])
        assert torch.allclose(batch, alone, atol=1e-9)


# --------------------------------------------------------------------------------------------- oracles per op


def test_gaussian_blur_matches_scipy_gaussian_filter() -> None:
    for severity in (2, 5):
        sigma = SEVERITIES["gaussian_blur"][severity - 1] * SIDE / 224
        ours = corrupt(X, "gaussian_blur", severity).numpy()
        radius = math.ceil(4 * sigma)
        ref = ndi.gaussian_filter(
            X.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", radius=(0, 0, radius, radius)
        )
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_disk_kernel_is_pixel_coverage_of_the_disk() -> None:
    # Independent coverage: a 200 x 200 grid per pixel built with numpy.
    for radius in (0.86, 2.3, 4.0):
        kernel = cops.disk_kernel(radius).numpy()
        half = kernel.shape[0] // 2
        fine = (np.arange(200) + 0.5) / 200 - 0.5
        coords = (np.arange(-half, half + 1)[:, None] + fine[None, :]).ravel()
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        cover = (yy**2 + xx**2 <= radius**2).reshape(2 * half + 1, 200, 2 * half + 1, 200).mean(axis=(1, 3))
        np.testing.assert_allclose(kernel, cover / cover.sum(), atol=1e-3)
    # At 224 pixels the blur strength (second moment) is that of ImageNet-C's kernel: a binary disk of pixel
    # centres on a grid of at least 17 x 17, smoothed by OpenCV's 3 x 3 Gaussian of the alias sigma.
    for radius, alias in ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)):
        grid = np.arange(-max(8, radius), max(8, radius) + 1)
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        disk = (yy**2 + xx**2 <= radius**2).astype(np.float32)
        reference = cv2.GaussianBlur(disk / disk.sum(), (3, 3), sigmaX=alias)
        kernel = cops.disk_kernel(radius).numpy()
        offsets = np.arange(kernel.shape[0]) - kernel.shape[0] // 2
        moment = (kernel * (offsets[:, None] ** 2 + offsets[None, :] ** 2)).sum()
        assert moment == pytest.approx((reference * (yy**2 + xx**2)).sum(), rel=0.05)


@pytest.mark.parametrize("scale", [None, 1.0])  # radius 2.9 px (direct convolution) and 10 px (FFT)
def test_defocus_blur_matches_scipy_and_opencv(scale: float | None) -> None:
    radius = SEVERITIES["defocus_blur"][4] * (SIDE / 224 if scale is None else scale)
    kernel = cops.disk_kernel(radius).numpy()
    ours = corrupt(X, "defocus_blur", 5, scale=scale).numpy()
    image = X.numpy()
    ref = np.stack([[ndi.correlate(image[b, c], kernel, mode="mirror") for c in range(3)] for b in range(3)])
    np.testing.assert_allclose(ours, ref.clip(0, 1), atol=1e-10)
    hwc = image[0].transpose(1, 2, 0).astype(np.float32)
    ref_cv = cv2.filter2D(hwc, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(ours[0].transpose(1, 2, 0), ref_cv.clip(0, 1), atol=1e-5)


def test_motion_kernels_point_along_the_angle_with_the_tap_centroid() -> None:
    angles = torch.tensor([0.0, 0.3, -0.7, math.pi / 2])
    radius, sigma = 5.0, 3.0
    kernels = cops.motion_kernels(radius, sigma, angles)
    t = torch.arange(0.0, 2 * radius + 1e-9, 0.25, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    mean_t = float((w * t).sum() / w.sum())  # bilinear splatting keeps every tap's position on average
    half = kernels.shape[-1] // 2
    offsets = torch.arange(kernels.shape[-1], dtype=torch.float64) - half
    for kernel, angle in zip(kernels, angles, strict=True):
        assert float(kernel.sum()) == pytest.approx(1.0) and float(kernel.min()) >= 0
        cy, cx = float((kernel.sum(1) * offsets).sum()), float((kernel.sum(0) * offsets).sum())
        assert cx == pytest.approx(mean_t * math.cos(angle), abs=1e-9)
        assert cy == pytest.approx(mean_t * math.sin(angle), abs=1e-9)


@pytest.mark.parametrize("radius", [2.0, 6.0])  # 11 x 11 kernels (grouped convolution) and 27 x 27 (FFT)
def test_motion_blur_matches_scipy_per_sample(radius: float) -> None:
    angles = torch.tensor([0.2, -0.5, 0.7])
    ours = cops.motion_blur(X, radius, radius / 2, angles).numpy()
    kernels = cops.motion_kernels(radius, radius / 2, angles).numpy()
    image = X.numpy()
    ref = np.stack(
        [[ndi.correlate(image[b, c], kernels[b], mode="mirror") for c in range(3)] for b in range(3)]
    )
    np.testing.assert_allclose(ours, ref.clip(0, 1), atol=1e-10)


def test_contrast_is_exactly_the_channel_mean_formula() -> None:
    for severity, factor in enumerate(SEVERITIES["contrast"], start=1):
        image = X.numpy()
        mean = image.mean(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(corrupt(X, "contrast", severity).numpy(), (image - mean) * factor + mean)


def test_brightness_matches_skimage_hsv_round_trip() -> None:
    image = X.clone()
    image[0, :, :4, :4] = 0.0  # black pixels: hue undefined, they become grey
    image[1, :, :4, :4] = 0.3  # grey pixels
    for severity, delta in enumerate(SEVERITIES["brightness"], start=1):
        ours = corrupt(image, "brightness", severity).permute(0, 2, 3, 1).numpy()
        for b in range(3):
            hsv = skimage.color.rgb2hsv(image[b].permute(1, 2, 0).numpy())
            hsv[..., 2] = np.clip(hsv[..., 2] + delta, 0, 1)
            np.testing.assert_allclose(ours[b], skimage.color.hsv2rgb(hsv), atol=1e-9)


def test_pixelate_matches_pillow_box_resize() -> None:
    image = X[:, :, :, :50].float()  # non-square, sides not multiples of the factor
    for severity, factor in enumerate(SEVERITIES["pixelate"], start=1):
        ours = corrupt(image, "pixelate", severity).numpy()
        h, w = image.shape[-2:]
        small = (int(w * factor), int(h * factor))
        for b in range(3):
            for c in range(3):
                channel = Image.fromarray(image[b, c].numpy(), mode="F")
                ref = np.asarray(channel.resize(small, Image.BOX).resize((w, h), Image.BOX))
                np.testing.assert_allclose(ours[b, c], ref, atol=2e-6)


def test_jpeg_equals_pillow_round_trip() -> None:
    uint8 = (X * 255).round().to(torch.uint8)
    for severity, quality in enumerate(SEVERITIES["jpeg_compression"], start=1):
        ours = corrupt(uint8.double() / 255, "jpeg_compression", severity)
        for b in range(3):
            buffer = io.BytesIO()
            Image.fromarray(uint8[b].permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
            ref = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            assert np.array_equal((ours[b] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), ref)


def test_noise_moments() -> None:
    grey = torch.full((4, 3, 64, 64), 0.5, dtype=torch.float64)
    diff = corrupt(grey, "gaussian_noise", 2, _gen()) - grey  # sigma 0.12: no clipping at 0.5 +- 4 sigma
    assert float(diff.mean()) == pytest.approx(0.0, abs=3e-3)
    assert float(diff.std()) == pytest.approx(0.12, rel=0.02)
    shot = corrupt(grey, "shot_noise", 1, _gen())  # Poisson(30) / 60: mean 0.5, variance 0.5 / 60
    assert float(shot.mean()) == pytest.approx(0.5, abs=3e-3)
    assert float(shot.var()) == pytest.approx(0.5 / 60, rel=0.05)
    impulse = corrupt(grey, "impulse_noise", 4, _gen())
    hit = impulse != 0.5
    assert float(hit.double().mean()) == pytest.approx(0.17, abs=0.01)
    assert float((impulse[hit] == 1.0).double().mean()) == pytest.approx(0.5, abs=0.03)
    assert bool(((impulse[hit] == 0) | (impulse[hit] == 1)).all())


def test_fog_layer_is_a_grey_normalised_fractal() -> None:
    dark = torch.full((2, 3, 48, 48), 0.2, dtype=torch.float64)  # (0.2 + s f) 0.2 / (0.2 + s) <= 0.2: no clip
    strength, _ = SEVERITIES["fog"][2]
    out = corrupt(dark, "fog", 3, _gen())
    layer = (out * (0.2 + strength) / 0.2 - 0.2) / strength  # recovers f
    assert torch.allclose(layer[:, 0], layer[:, 1]) and torch.allclose(layer[:, 0], layer[:, 2])
    assert torch.allclose(layer.amin(dim=(1, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(layer.amax(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float64), atol=1e-6)
    # lower decay keeps more of the fine octaves
    rough = cops.fractal_noise(4, 64, 64, 1.4, 73.0, _gen(), dark)
    smooth = cops.fractal_noise(4, 64, 64, 2.0, 73.0, _gen(), dark)
    assert _hf_energy(rough) > 2 * _hf_energy(smooth)


def test_frost_is_a_blend_of_the_image_and_a_blue_white_texture() -> None:
    image_weight, frost_weight = SEVERITIES["frost"][3]
    texture_part = corrupt(torch.zeros_like(X), "frost", 4, _gen(5))  # b F, since F does not depend on x
    assert torch.allclose(corrupt(X, "frost", 4, _gen(5)), (image_weight * X + texture_part).clamp(0, 1))
    texture = texture_part / frost_weight
    assert float(texture.max()) <= 1.0 + 1e-6 and 0.25 < float(texture.mean()) < 0.6
    assert float(texture[:, 2].mean()) > float(texture[:, 0].mean())  # bluish


def test_random_draws_do_not_depend_on_the_images_device_or_dtype() -> None:
    for name in RANDOM:
        a = corrupt(X, name, 3, _gen(2))
        b = corrupt(X.float(), name, 3, _gen(2)).double()
        assert torch.allclose(a, b, atol=1e-5), name
        if torch.cuda.is_available():
            c = corrupt(X.cuda(), name, 3, _gen(2)).cpu()
            assert torch.allclose(a, c, atol=1e-5), name


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(X, "snow", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(X, "fog", 6)
    with pytest.raises(ValueError, match="to_float"):
        corrupt((X * 255).to(torch.uint8), "fog", 1)


# --------------------------------------------------------------------------------------------- evaluation, sheet


def _two_colour_task(n: int = 48, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat images, class 0 redder than blue, class 1 bluer, by a margin of 0.04 to 0.4."""
    g = _gen(11)
    labels = torch.arange(n) % 2
    margin = 0.02 + 0.18 * torch.rand(n, generator=g)
    sign = 1.0 - 2.0 * labels.double()
    colour = torch.stack(
        [0.5 + sign * margin, torch.full((n,), 0.5, dtype=torch.float64), 0.5 - sign * margin], 1
    )
    return colour[:, :, None, None].expand(n, 3, side, side).float().contiguous(), labels


def _centre_colour(images: torch.Tensor) -> torch.Tensor:  # a 2 x 2 patch: noise moves it
    h, w = images.shape[-2] // 2, images.shape[-1] // 2
    return images[:, :, h - 1 : h + 1, w - 1 : w + 1].mean(dim=(2, 3))


def _red_vs_blue(features: torch.Tensor) -> torch.Tensor:
    return (features[:, 2] > features[:, 0]).long()


def test_corruption_robustness_on_a_colour_task(tmp_path) -> None:
    images, labels = _two_colour_task()
    values = corruption_robustness(_centre_colour, _red_vs_blue, images, labels, batch_size=20, seed=0)
    assert values["clean"] == 1.0 and values["severities"] == [1, 2, 3, 4, 5]
    assert set(values["per_corruption"]) == set(DEFAULT_CORRUPTIONS)
    noise = values["per_corruption"]["gaussian_noise"]["accuracy"]
    assert noise[4] < 0.85 and noise[4] < noise[0]  # noise flips the centre colour of small-margin images
    assert values["per_corruption"]["contrast"]["accuracy"] == [1.0] * 5  # flat images: nothing to contract
    # a direct recomputation of one entry, with the generator the evaluation documents
    g = torch.Generator().manual_seed(stream_seed(0, "gaussian_noise", 3))
    predicted = torch.cat(
        [
            _red_vs_blue(_centre_colour(corrupt(images[i : i + 20], "gaussian_noise", 3, g)))
            for i in range(0, 48, 20)
        ]
    )
    assert noise[2] == float((predicted == labels).double().mean())
    # means
    entries = values["per_corruption"]
    for entry in entries.values():
        assert entry["mean"] == pytest.approx(np.mean(entry["accuracy"]))
    assert values["mean"] == pytest.approx(np.mean([a for e in entries.values() for a in e["accuracy"]]))
    for family, members in FAMILIES.items():
        present = [entries[m]["mean"] for m in members if m in entries]
        assert values["per_family"][family] == pytest.approx(np.mean(present))
    # one corruption alone gives the same numbers (per-(corruption, severity) generators), uint8 input as well
    alone = corruption_robustness(
        _centre_colour,
        _red_vs_blue,
        (images * 255).round().to(torch.uint8),
        labels.numpy(),
        names=["gaussian_noise"],
        severities=(3,),
        batch_size=20,
    )
    assert alone["per_corruption"]["gaussian_noise"]["accuracy"] == [noise[2]]
    record_result(tmp_path, "corruptions", "model", values, {"seed": 0})
    stored = json.loads(results_path(tmp_path).read_text())["corruptions"]["model"]
    assert stored["per_corruption"]["gaussian_noise"]["accuracy"] == noise


def test_corruption_robustness_rejects_bad_arguments() -> None:
    images, labels = _two_colour_task(4)
    with pytest.raises(ValueError, match="unknown corruptions"):
        corruption_robustness(_centre_colour, _red_vs_blue, images, labels, names=["rain"])
    with pytest.raises(ValueError, match="severities"):
        corruption_robustness(_centre_colour, _red_vs_blue, images, labels, severities=(0, 1))
    with pytest.raises(ValueError, match="match in length"):
        corruption_robustness(_centre_colour, _red_vs_blue, images, labels[:3])


def test_corruption_sheet_grid(tmp_path) -> None:
    photo = (X[0] * 255).round().to(torch.uint8)[:, :24, :24]
    path = tmp_path / "sheet.png"
    corruption_sheet(photo.permute(1, 2, 0).numpy(), path, names=("fog", "pixelate"), zoom=2)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    cell, gap, label_w, label_h = 48, 2, 110, 16
    assert sheet.shape == (label_h + 2 * (cell + gap), label_w + 6 * (cell + gap), 3)
    first = sheet[label_h : label_h + cell, label_w : label_w + cell]  # fog, severity 0: the photo, zoomed
    assert np.array_equal(first, photo.permute(1, 2, 0).numpy().repeat(2, 0).repeat(2, 1))
    pixelated = sheet[label_h + cell + gap : label_h + 2 * cell + gap, label_w + 5 * (cell + gap) :][:, :cell]
    assert not np.array_equal(pixelated, first)
