"""The dataset-bias presets (configs/p1/bias_*.yaml, configs/p2/bias_*.yaml, configs/world/bias.yaml) load,
validate and name datasets that exist, and each comparison differs only in what it studies: the P1 trio in
the kind of training images (counts matched), P2's pairs in the long tail or the domain (counts matched).
Fast: configs and world presets only, nothing is rendered or trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from invarlab.config import load_config
from invarlab.pipeline import RunConfig
from invarlab.world.catalog import CATEGORY_GROUPS
from invarlab.world.config import WorldPreset
from invarlab.world.datasets import cache_identity, num_images

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRIO = ("object_centric", "scene_centric", "cropped_boxes")
P2 = ("longtail", "uniform", "domain", "general")
PRESETS = [CONFIGS / "p1" / f"bias_{n}.yaml" for n in TRIO] + [CONFIGS / "p2" / f"bias_{n}.yaml" for n in P2]


def run_config(path: Path) -> RunConfig:
    return load_config(RunConfig, path)


def world(name: str = "bias", overrides: tuple[str, ...] = ()) -> WorldPreset:
    return load_config(WorldPreset, name, overrides, group="world")


def test_every_bias_preset_is_listed():
    found = sorted(p.name for d in ("p1", "p2") for p in (CONFIGS / d).glob("bias_*.yaml"))
    assert found == sorted(p.name for p in PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_loads_and_names_datasets_that_exist(path):
    cfg = run_config(path)
    data, ev = cfg.train.data, cfg.eval
    assert cfg.train.method.name == "moco" and data.source == "world"
    assert cfg.train.run_dir.endswith(path.stem)
    train_world = world(data.world_preset, tuple(data.world_overrides))
    assert data.world_dataset in train_world.datasets
    assert data.world_monitor_dataset in train_world.datasets
    eval_world = world(ev.world_preset, tuple(ev.world_overrides))
    needed = [ev.classify_train, ev.classify_test, *ev.invariance_sets]
    needed += [ev.probes] if "factor_probes" in ev.evaluations else []
    needed += [ev.multilabel] if "svm" in ev.evaluations else []
    needed += [ev.dense.scenes] if "seg_probe" in ev.evaluations else []
    assert [n for n in needed if n not in eval_world.datasets] == []
    assert "invariance" in ev.evaluations
    # Every dataset a run trains on is the training split (unseen instances stay for the tests).
    assert train_world.datasets[data.world_dataset].split == "train"


def _without(cfg: RunConfig, *keys: str) -> dict:
    """The config as nested dicts without the dotted ``keys``."""
    out = dataclasses.asdict(cfg)
    for key in keys:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        node.pop(last)
    return out


def test_the_p1_trio_differs_only_in_the_training_images_with_counts_matched():
    cfgs = [run_config(CONFIGS / "p1" / f"bias_{n}.yaml") for n in TRIO]
    w = world()
    specs = [w.datasets[c.train.data.world_dataset] for c in cfgs]
    assert [s.kind for s in specs] == list(TRIO)
    counts = {num_images(s) for s in specs}
    assert counts == {4096}
    assert {(s.split, s.imbalance, tuple(s.categories), s.texture_domain) for s in specs} == {
        ("train", 1.0, (), "all")
    }
    # Recipe, budget and evaluations identical; the kNN monitor aside (cropped boxes monitor on crops).
    keys = ("train.run_dir", "train.data.world_dataset", "train.data.world_monitor_dataset")
    rest = [_without(c, *keys) for c in cfgs]
    assert rest[0] == rest[1] == rest[2]
    # The same recipe as configs/p1/moco_v2.yaml, whose training images are bias_object_centric's.
    reference = run_config(CONFIGS / "p1" / "moco_v2.yaml")
    assert dataclasses.asdict(cfgs[0].train.method) == dataclasses.asdict(reference.train.method)
    ref_world = world(reference.train.data.world_preset)
    assert cache_identity(specs[0], w.world) == cache_identity(
        ref_world.datasets[reference.train.data.world_dataset], ref_world.world
    )


def test_p2_pairs_differ_only_in_their_axis_with_counts_matched():
    cfgs = {n: run_config(CONFIGS / "p2" / f"bias_{n}.yaml") for n in P2}
    w = world()
    spec = {n: w.datasets[c.train.data.world_dataset] for n, c in cfgs.items()}
    assert {num_images(s) for s in spec.values()} == {4096}
    # Uniform vs long-tailed: the same categories, imbalance 1 vs 10; the same evaluation.
    assert (spec["uniform"].imbalance, spec["longtail"].imbalance) == (1.0, 10.0)
    assert spec["uniform"].categories == spec["longtail"].categories == []
    assert dataclasses.asdict(cfgs["uniform"].eval) == dataclasses.asdict(cfgs["longtail"].eval)
    # General vs domain-specific: every category vs one group, both scored on the domain's task.
    assert spec["general"].categories == [] and spec["domain"].categories == ["outdoor"]
    assert spec["general"].imbalance == spec["domain"].imbalance == 1.0
    assert dataclasses.asdict(cfgs["general"].eval) == dataclasses.asdict(cfgs["domain"].eval)
    domain_sets = [
        w.datasets[cfgs["domain"].eval.classify_train],
        w.datasets[cfgs["domain"].eval.classify_test],
    ]
    assert all(s.categories == ["outdoor"] for s in domain_sets)
    assert [s.split for s in domain_sets] == ["train", "test"]
    assert set(CATEGORY_GROUPS["outdoor"]) and w.datasets["domain"].texture_domain == "all"
    # Training recipe identical to configs/p2/moco.yaml's across all four.
    reference = dataclasses.asdict(run_config(CONFIGS / "p2" / "moco.yaml").train.method)
    assert all(dataclasses.asdict(c.train.method) == reference for c in cfgs.values())
    keys = ("train.run_dir", "train.data.world_dataset", "train.data.world_monitor_dataset", "eval")
    rest = [_without(c, *keys) for c in cfgs.values()]
    assert all(r == rest[0] for r in rest)


def test_the_bias_world_shares_the_quickstart_world_and_evaluation_sets():
    bias, quick = world(), world("quickstart")
    assert dataclasses.asdict(bias.world) == dataclasses.asdict(quick.world)
    shared = [n for n in bias.datasets if n in quick.datasets]
    assert {
        "eval_train",
        "eval_test",
        "viewpoint",
        "occlusion",
        "instance_viewpoint",
        "probes",
        "scenes",
    } <= set(shared)
    differ = [
        n
        for n in shared
        if cache_identity(bias.datasets[n], bias.world) != cache_identity(quick.datasets[n], quick.world)
    ]
    assert differ == [], f"configs/world/bias.yaml: keep {differ} as in configs/world/quickstart.yaml"
