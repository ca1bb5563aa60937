"""Multi-crop views with constrained cropping (PAPERS.md §2.2.2) and AutoAugment on the non-key crops (§2.2.3).

Oracles: the overlap bound recomputed with Python integers, the first-valid-try rule replayed in a loop from the
same generator, the fallback replayed as a fresh unconstrained draw, and views rebuilt from their parameters.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from invarlab.errors import ConfigError
from invarlab.views import apply_view, ops, sample_crop_boxes
from invarlab.views.autoaugment import autoaugment
from invarlab.views.multicrop import (
    MultiCropConfig,
    apply_crop,
    intersection_area,
    multicrop_views,
    sample_constrained_boxes,
    scaled_sizes,
)

RATIO = (3 / 4, 4 / 3)
SMALL = (0.05, 0.14)


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection area of two (top, left, height, width) boxes, in plain Python."""
    h = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    w = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, h) * max(0.0, w)


def test_scaled_sizes() -> None:
    assert scaled_sizes(224) == (160, 96)
    assert scaled_sizes(32) == (23, 14)
    assert scaled_sizes(64) == (46, 27)


def test_intersection_area_matches_python() -> None:
    g = torch.Generator().manual_seed(0)
    a = sample_crop_boxes(200, 40, 50, (0.02, 0.5), RATIO, g)
    b = sample_crop_boxes(200, 40, 50, (0.02, 0.5), RATIO, g)
    got = intersection_area(a, b)
    assert got.tolist() == [_overlap(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert 0 < int((got == 0).sum()) < 200  # disjoint and overlapping pairs both occur


def test_constrained_boxes_meet_the_bound_and_take_the_first_valid_try() -> None:
    n, side, tries = 1500, 64, 10
    key = sample_crop_boxes(n, side, side, (0.2, 1.0), RATIO, torch.Generator().manual_seed(1))
    boxes, met = sample_constrained_boxes(
        key, side, side, SMALL, RATIO, 0.1, torch.Generator().manual_seed(2)
    )
    # Replay: the same generator gives the n x tries candidates, then the fallback draw.
    g = torch.Generator().manual_seed(2)
    candidates = sample_crop_boxes(n * tries, side, side, SMALL, RATIO, g).reshape(n, tries, 4).tolist()
    fallback = sample_crop_boxes(n, side, side, SMALL, RATIO, g).tolist()
    keys = key.tolist()
    for i in range(n):
        valid = [c for c in candidates[i] if _overlap(c, keys[i]) >= 0.1 * (c[2] * c[3])]
        assert bool(met[i]) == bool(valid)
        assert boxes[i].tolist() == (valid[0] if valid else fallback[i])
    got = boxes.tolist()
    assert all(_overlap(got[i], keys[i]) >= 0.1 * (got[i][2] * got[i][3]) for i in range(n) if met[i])
    assert float(met.float().mean()) > 0.97  # the key covers >= 20% of the image: the bound is easy to meet
    # Without the constraint the bound fails often: the constraint changes the crops.
    free = sample_crop_boxes(n, side, side, SMALL, RATIO, torch.Generator().manual_seed(3))
    violated = intersection_area(free, key) < 0.1 * free[:, 2] * free[:, 3]
    assert float(violated.float().mean()) > 0.05  # about 9.5% here


def test_impossible_bound_takes_the_documented_fallback() -> None:
    n, side = 300, 48
    # A 1x1 key box cannot cover 10% of a small crop of >= 5% of the image (>= 115 px): every try fails.
    key = torch.tensor([[10.0, 10.0, 1.0, 1.0]]).expand(n, 4)
    boxes, met = sample_constrained_boxes(
        key, side, side, SMALL, RATIO, 0.1, torch.Generator().manual_seed(4)
    )
    assert not bool(met.any())
    g = torch.Generator().manual_seed(4)
    sample_crop_boxes(n * 10, side, side, SMALL, RATIO, g)  # the ten failed tries
    assert torch.equal(boxes, sample_crop_boxes(n, side, side, SMALL, RATIO, g))  # one unconstrained draw
    # min_overlap = 0: the first try always wins.
    boxes0, met0 = sample_constrained_boxes(
        key, side, side, SMALL, RATIO, 0.0, torch.Generator().manual_seed(4)
    )
    first = sample_crop_boxes(n * 10, side, side, SMALL, RATIO, torch.Generator().manual_seed(4)).reshape(
        n, 10, 4
    )
    assert bool(met0.all()) and torch.equal(boxes0, first[:, 0])


def _images(n: int, side: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(n, 3, 4, 4, generator=g), size=(side, side), mode="bilinear"
    )
    return (
        ((smooth + 0.1 * torch.randn(n, 3, side, side, generator=g)).clamp(0, 1) * 255)
        .round()
        .to(torch.uint8)
    )


def test_multicrop_views_shapes_key_and_rebuild() -> None:
    cfg = MultiCropConfig(n_large=2, n_small=3, large_size=24, small_size=12, autoaugment_p=0.5)
    images = _images(64)
    views = multicrop_views(images, cfg, torch.Generator().manual_seed(0))
    again = multicrop_views(images, cfg, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in views.crops] == [(64, 3, 24, 24)] * 2 + [(64, 3, 12, 12)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views.crops, again.crops, strict=True))
    assert views.key_index == 1 and views.key is views.crops[1] and views.query_indices == [0, 2, 3, 4]
    assert views.queries_by_size() == [(24, [0]), (12, [2, 3, 4])]
    # The key never takes AutoAugment and is exactly the MoCo v2 recipe of its parameters.
    assert views.autoaugment[1] is None and torch.equal(views.key, apply_view(images, views.params[1]))
    for i in views.query_indices:
        aa, p = views.autoaugment[i], views.params[i]
        assert aa is not None and torch.equal(apply_crop(images, p, aa), views.crops[i])
        on = aa.enabled
        assert 0 < int(on.sum()) < 64
        # AutoAugment replaces the photometric recipe: no jitter, grayscale or blur where it is on.
        assert not bool((p.jitter_applied | p.grayscale | p.blur_applied)[on].any())
        # Where it is on: crop (+ flip) -> AutoAugment -> normalise.
        plain = apply_view(images, dataclasses.replace(p, mean=None, std=None))
        expected = ops.normalize(autoaugment(plain, aa))
        assert torch.allclose(views.crops[i][on], expected[on], atol=1e-5)
    # Small crops meet the overlap bound with the key box wherever no fallback was taken.
    key = views.params[1].boxes
    for j in range(3):
        b = views.params[2 + j].boxes
        ok = intersection_area(b, key).double() >= 0.1 * (b[:, 2] * b[:, 3]).double()
        assert bool(ok[views.constrained[j]].all())


def test_multicrop_options() -> None:
    images = _images(400, side=24)
    base = MultiCropConfig(n_large=2, n_small=2, large_size=16, small_size=8)
    free = dataclasses.replace(base, constrained=False, autoaugment_p=0.0)
    views = multicrop_views(images, free, torch.Generator().manual_seed(1))
    assert all(a is None for a in views.autoaugment) and bool(views.constrained.all())
    rate = (
        multicrop_views(images, base, torch.Generator().manual_seed(1)).autoaugment[0].enabled.float().mean()
    )
    assert abs(float(rate) - 0.5) < 0.08
    two = multicrop_views(images, dataclasses.replace(base, n_small=0), torch.Generator().manual_seed(1))
    assert len(two.crops) == 2 and two.constrained.shape == (0, 400)
    for bad in (
        dict(key_index=2),
        dict(min_overlap=1.5),
        dict(small_scale=(0.2, 0.1)),
        dict(n_large=1, n_small=0),
    ):
        with pytest.raises(ConfigError, match="multicrop"):
            dataclasses.replace(base, **bad).validate()
