"""Factor plans: invariance-set structure, long tail, domains, splits, scenes, clips, and the cached API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invarlab.errors import ConfigError
from invarlab.world import datasets as world_datasets
from invarlab.world.api import render_datasets
from invarlab.world.catalog import CATEGORY_GROUPS, CATEGORY_NAMES
from invarlab.world.config import DatasetSpec, WorldConfig, WorldPreset
from invarlab.world.datasets import num_images, plan
from invarlab.world.sampling import long_tail_counts
from invarlab.world.sets import viewpoint_bins

WORLD = WorldConfig(instances_per_category=10)
PER_IMAGE_FIELDS = (
    "azimuth",
    "elevation",
    "distance",
    "light_azimuth",
    "light_elevation",
    "light_temperature",
)


def columns(kind: str, **kw):
    spec = DatasetSpec(kind=kind, num_images=kw.pop("num_images", 48), **kw)
    f, extra = plan(spec, WORLD)
    return f, extra, spec


def constant_within_sets(values: torch.Tensor, set_id: torch.Tensor) -> bool:
    return all(bool((values[set_id == s] == values[set_id == s][0]).all()) for s in set_id.unique())


@pytest.mark.parametrize(
    ("kind", "swept"),
    [("viewpoint", "azimuth"), ("illum_direction", "light_azimuth"), ("illum_color", "light_temperature")],
)
def test_sweep_sets_vary_one_factor(kind, swept):
    f, extra, _spec = columns(kind, set_size=12)
    set_id = extra["set_id"]
    assert torch.equal(torch.bincount(set_id), torch.full((4,), 12))
    assert torch.equal(extra["class_id"], set_id)  # ALOI: one class per object
    assert constant_within_sets(f.instance[:, 0], set_id) and constant_within_sets(f.category[:, 0], set_id)
    for name in PER_IMAGE_FIELDS:
        same = constant_within_sets(getattr(f, name), set_id)
        assert same == (name != swept), name
    assert constant_within_sets(f.background_params, set_id)


def test_viewpoint_sweep_is_evenly_spaced():
    f, _extra, _ = columns("viewpoint", set_size=12, num_images=12)
    steps = torch.diff(f.azimuth) % 360
    assert torch.allclose(steps, torch.full_like(steps, 30.0), atol=1e-3)


def test_occlusion_sets_have_nine_levels_and_category_classes():
    f, extra, spec = columns("occlusion", num_images=45)
    assert num_images(spec) == 45
    assert torch.allclose(f.occluder_coverage, (torch.arange(45) % 9) / 10)
    assert constant_within_sets(f.azimuth, extra["set_id"]) and constant_within_sets(
        f.occluder_shape, extra["set_id"]
    )
    assert torch.equal(extra["class_id"], f.category[:, 0])


def test_instance_sets_hold_distinct_instances_in_one_viewpoint_bin():
    f, extra, _ = columns("instance", set_size=6, num_images=60)
    bins = viewpoint_bins(f)
    for s in extra["set_id"].unique():
        m = extra["set_id"] == s
        assert len(f.instance[m, 0].unique()) == int(m.sum())
        assert len(f.category[m, 0].unique()) == 1
        assert len(bins["az_bin"][m].unique()) == 1 and len(bins["el_bin"][m].unique()) == 1
    assert torch.equal(extra["class_id"], f.category[:, 0])


def test_instance_viewpoint_sets_have_one_image_per_azimuth_bin():
    f, extra, _ = columns("instance_viewpoint", num_images=36)
    for s in extra["set_id"].unique():
        m = extra["set_id"] == s
        assert sorted(extra["az_bin"][m].tolist()) == list(range(6))
        assert len(f.instance[m, 0].unique()) == 6 and len(f.category[m, 0].unique()) == 1


def test_long_tail_profile():
    counts = long_tail_counts(1000, 10, 50.0)
    assert int(counts.sum()) == 1000 and bool((torch.diff(counts) <= 0).all())
    assert abs(counts[0].item() / counts[-1].item() - 50.0) < 5
    f, _, _ = columns("object_centric", num_images=1000, imbalance=20.0, categories=["mug", "car", "tree"])
    n = torch.bincount(f.category[:, 0], minlength=len(CATEGORY_NAMES))
    mug, car, tree = (n[CATEGORY_NAMES.index(c)].item() for c in ("mug", "car", "tree"))
    assert mug + car + tree == 1000 and mug > car > tree and abs(mug / tree - 20) < 2


def test_domains_and_splits():
    f, _, _ = columns("object_centric", categories=["furniture"], texture_domain="stripes")
    names = {CATEGORY_NAMES[c] for c in f.category[:, 0].tolist()}
    assert names <= set(CATEGORY_GROUPS["furniture"]) and len(names) == 3
    assert bool((f.texture_override[:, 0] == 1).all())
    train, _, _ = columns("object_centric", num_images=400, split="train")
    test, _, _ = columns("object_centric", num_images=400, split="test")
    assert set(train.instance[:, 0].tolist()).isdisjoint(test.instance[:, 0].tolist())


def test_scenes_stand_on_the_floor_with_two_to_six_objects():
    from invarlab.world.catalog import build_catalog

    f, _, _ = columns("scene_centric", num_images=30)
    n = (f.category >= 0).sum(1)
    assert int(n.min()) >= 2 and int(n.max()) <= 6 and len(n.unique()) > 2
    cat = build_catalog(WORLD.seed, WORLD.instances_per_category)
    present = f.category >= 0
    lowest = f.position[..., 1] + cat.bottom[f.category.clamp_min(0), f.instance] * f.scale
    assert torch.allclose(lowest[present], torch.zeros(int(present.sum())), atol=1e-5)


def test_clips_move_smoothly_with_persistent_tracks():
    f, extra, spec = columns("clips", num_images=40, clip_length=10)
    assert num_images(spec) == 40
    for c in extra["clip"].unique():
        m = extra["clip"] == c
        assert torch.equal(extra["frame"][m], torch.arange(10))
        assert len(extra["track_0"][m].unique()) == 1
        step = (f.position[m][1:] - f.position[m][:-1]).norm(dim=-1)
        assert float(step.max()) < 0.25 and float(step.max()) > 0  # moving, without jumps
    assert len(extra["track_0"].unique()) == 4  # one track id per clip slot


def test_render_datasets_caches(tmp_path):
    preset = WorldPreset(cache_dir=str(tmp_path))
    preset.world.instances_per_category = 4
    preset.world.render.resolution = 24
    preset.world.render.supersample = 1
    preset.world.render.compile = False
    preset.datasets = {
        "obj": DatasetSpec(kind="object_centric", num_images=10),
        "occ": DatasetSpec(kind="occlusion", num_images=9),
        "crops": DatasetSpec(kind="cropped_boxes", num_images=6, min_box=4),
    }
    first = render_datasets(preset)
    assert not any(r.hit for r in first.values())
    assert [len(first[k].dataset) for k in ("obj", "occ", "crops")] == [10, 9, 6]
    assert first["crops"].dataset.images.shape[1:] == (3, 24, 24)
    again = render_datasets(preset)
    assert all(r.hit for r in again.values())
    assert np.array_equal(np.asarray(again["obj"].dataset.images), np.asarray(first["obj"].dataset.images))
    occ = first["occ"].dataset.meta
    assert np.allclose(occ["occluded_fraction"], occ["occluder_coverage"], atol=0.05)


def test_unreachable_min_box_fails_instead_of_drawing_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(world_datasets, "_MAX_EMPTY_ROUNDS", 3)  # the default 20 only costs time here
    preset = WorldPreset(cache_dir=str(tmp_path))
    preset.world.instances_per_category = 4
    preset.world.render.resolution = 16
    preset.world.render.supersample = 1
    preset.world.render.batch_size = 16
    preset.world.render.compile = False
    # A box side can never exceed the 16 px frame, so min_box=64 is out of reach.
    preset.datasets = {"crops": DatasetSpec(kind="cropped_boxes", num_images=4, min_box=64)}
    with pytest.raises(ConfigError, match=r"3 scene batches reached min_box=64 px at resolution 16"):
        render_datasets(preset)
    # Nothing half-rendered reads as a complete cache entry: asking again fails again.
    with pytest.raises(ConfigError):
        render_datasets(preset)
