"""Structured configs: precedence, validation messages, presets, describe, hashing and YAML round trips."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import invarlab.world.config as world_config
from invarlab.config import (
    available_presets,
    config_hash,
    describe,
    load_config,
    opt,
    resolve_preset,
    to_yaml,
    validate,
)
from invarlab.errors import ConfigError, UserError
from invarlab.world.config import DatasetSpec, WorldPreset


def load(*overrides: str, preset: str | Path | None = None) -> WorldPreset:
    return load_config(WorldPreset, preset, list(overrides), group="world")


def error_of(*overrides: str, preset: str | Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*overrides, preset=preset)
    assert isinstance(info.value, UserError)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_opt_lives_in_invarlab_config_and_world_schema_uses_it():
    assert world_config.opt is opt
    meta = {f.name: f.metadata for f in dataclasses.fields(world_config.FactorRanges)}
    assert meta["azimuth"]["interval"] is True
    assert "interval" not in meta["position"]


def test_returns_real_dataclass_instances():
    cfg = load("datasets.a.kind=clips")
    assert type(cfg) is WorldPreset
    assert type(cfg.datasets["a"]) is DatasetSpec
    assert cfg.datasets["a"].kind == "clips"


def test_precedence_override_beats_preset_beats_default(tmp_path):
    preset = write(tmp_path, "world:\n  render:\n    resolution: 32\n    ambient: 0.5\n")
    assert load().world.render.resolution == 64
    from_preset = load(preset=preset)
    assert (from_preset.world.render.resolution, from_preset.world.render.ambient) == (32, 0.5)
    both = load("world.render.resolution=48", preset=preset)
    assert (both.world.render.resolution, both.world.render.ambient) == (48, 0.5)
    assert both.world.render.supersample == 2  # untouched keys keep the schema default
    assert load("world.render.resolution=40", "world.render.resolution=56").world.render.resolution == 56


def test_nested_dict_dataset_entries_override():
    cfg = load("datasets.clips.kind=object_centric", "datasets.new.kind=scene_centric", preset="tiny")
    clips = cfg.datasets["clips"]
    assert (clips.kind, clips.num_images, clips.clip_length) == ("object_centric", 16, 4)
    assert cfg.datasets["new"] == DatasetSpec(kind="scene_centric")
    assert set(cfg.datasets) >= {"object_centric", "scene_centric", "cropped_boxes", "viewpoint", "clips"}


def test_override_values_are_yaml_and_coerced_to_the_field_type():
    cfg = load(
        "world.factors.azimuth=[0,90]", "world.render.ambient=1", "datasets.a.categories=[cube, torus]"
    )
    assert cfg.world.factors.azimuth == [0.0, 90.0]
    assert all(type(v) is float for v in cfg.world.factors.azimuth)
    assert type(cfg.world.render.ambient) is float
    assert cfg.datasets["a"].categories == ["cube", "torus"]
    assert load("cache_dir=").cache_dir == ""


def test_unknown_key_suggests_nearest_in_override():
    msg = error_of("world.render.resolutoin=32")
    assert "unknown key 'world.render.resolutoin'" in msg
    assert "in override 'world.render.resolutoin=32'" in msg
    assert msg.endswith("did you mean: world.render.resolution?")


def test_unknown_key_in_file_names_the_file(tmp_path):
    preset = write(tmp_path, "world:\n  rendr:\n    resolution: 32\n")
    msg = error_of(preset=preset)
    assert f"in {preset}" in msg
    assert "did you mean: world.render.resolution" in msg


def test_unknown_key_inside_dict_entry_suggests_with_the_entry_name():
    msg = error_of("datasets.train.knd=clips")
    assert "unknown key 'datasets.train.knd'" in msg
    assert "did you mean: datasets.train.kind" in msg


def test_wrong_type_names_key_value_and_type():
    msg = error_of("world.render.resolution=abc")
    assert "'world.render.resolution'" in msg and "abc" in msg and "expected int" in msg
    assert "expected bool" in error_of("world.render.compile=1")
    assert "expected list[float]" in error_of("world.factors.azimuth=5")
    assert "DatasetSpec" in error_of("datasets.a=5")


def test_out_of_range_names_key_value_and_range(tmp_path):
    msg = error_of("world.render.resolution=8")
    assert "'world.render.resolution' = 8" in msg and "16..1024" in msg and "override" in msg
    preset = write(tmp_path, "world:\n  render:\n    resolution: 2048\n")
    msg = error_of(preset=preset)
    assert "2048" in msg and "16..1024" in msg and str(preset) in msg
    assert ">= 1" in error_of("datasets.a.objects_per_scene=[0, 3]")


def test_bad_choice_lists_the_choices():
    msg = error_of("datasets.a.kind=clip")
    assert "'datasets.a.kind' = clip" in msg
    for kind in world_config.DATASET_KINDS:
        assert kind in msg


@pytest.mark.parametrize("value", ["[90, 0]", "[10]", "[1, 2, 3]"])
def test_interval_fields_need_two_ordered_entries(value):
    msg = error_of(f"world.factors.azimuth={value}")
    assert "'world.factors.azimuth'" in msg and "lo <= hi" in msg


def test_malformed_overrides_and_files(tmp_path):
    assert "key=value" in error_of("world.render.resolution")
    assert "not valid YAML" in error_of("world.factors.azimuth=[1,")
    bad = write(tmp_path, "world: [\n")
    msg = error_of(preset=bad)
    assert str(bad) in msg and "line" in msg
    assert "mapping" in error_of(preset=write(tmp_path, "- 1\n", "list.yaml"))


def test_presets_resolve_by_name_and_unknown_lists_available():
    assert {"default", "tiny"} <= set(available_presets("world"))
    assert resolve_preset("tiny", "world").name == "tiny.yaml"
    msg = error_of(preset="nosuchpreset")
    assert "nosuchpreset" in msg and "default" in msg and "tiny" in msg
    assert "not found" in error_of(preset="missing/file.yaml")


def test_shipped_presets_validate_and_have_the_promised_content():
    default = load(preset="default")
    assert {n: (d.kind, d.num_images) for n, d in default.datasets.items()} == {
        "object_centric": ("object_centric", 1000),
        "scene_centric": ("scene_centric", 1000),
        "cropped_boxes": ("cropped_boxes", 1000),
    }
    tiny = load(preset="tiny")
    assert tiny.world.render.resolution == 32 and tiny.world.instances_per_category == 4
    assert tiny.datasets and all(d.num_images == 16 for d in tiny.datasets.values())


@pytest.mark.parametrize("name", available_presets("world"))
def test_every_world_preset_validates(name):
    assert isinstance(load(preset=name), WorldPreset)


def test_validate_checks_objects_built_in_python():
    cfg = WorldPreset()
    validate(cfg)
    cfg.world.render.resolution = 4
    with pytest.raises(ConfigError, match=r"16\.\.1024"):
        validate(cfg)
    cfg.world.render.resolution = "big"
    with pytest.raises(ConfigError, match="expected int"):
        validate(cfg)


@dataclasses.dataclass
class _Item:
    x: int = opt(1, "x", range=(0, 5))


@dataclasses.dataclass
class _Generic:
    items: list[_Item] = dataclasses.field(default_factory=list, metadata={"help": "items"})
    maybe: int | None = opt(None, "an optional int", range=(0, 3))
    tags: list[str] = opt([], "tags", choices=("a", "b"))  # noqa: RUF009 (opt copies the list)


def test_generic_schema_lists_of_dataclasses_optionals_and_list_choices():
    cfg = load_config(_Generic, None, ["items=[{x: 2}, {x: 3}]", "maybe=2", "tags=[a, b]"])
    assert cfg == _Generic(items=[_Item(2), _Item(3)], maybe=2, tags=["a", "b"])
    assert load_config(_Generic, None, ["maybe=null"]).maybe is None
    cases = {
        "items=[{x: 9}]": "'items[0].x' = 9 (in override 'items=[{x: 9}]') is out of range: allowed 0..5",
        "maybe=5": "'maybe' = 5 (in override 'maybe=5') is out of range: allowed 0..3",
        "tags=[a, c]": "'tags' = c (in override 'tags=[a, c]') is not one of: a, b",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(_Generic, None, [override])
        assert str(info.value) == message
    with pytest.raises(ConfigError, match="in the config object"):
        validate(_Generic(items=[_Item(7)]))
    assert [o.type for o in describe(_Generic)] == ["list[_Item]", "int | None", "list[str]"]


def test_describe_lists_every_option_with_default_and_allowed_values():
    rows = {o.key: o for o in describe(WorldPreset)}
    res = rows["world.render.resolution"]
    assert (res.type, res.default, res.allowed) == ("int", 64, "16..1024")
    assert res.help == "image height and width in pixels"
    assert rows["datasets.<name>.kind"].allowed.split("|") == list(world_config.DATASET_KINDS)
    assert rows["world.factors.azimuth"].default == [0.0, 360.0]
    assert "cache_dir" in rows and "world.render" not in rows


def test_config_hash_is_stable_across_processes_and_sensitive_to_values():
    cfg = load(preset="tiny")
    code = (
        "from invarlab.config import load_config, config_hash\n"
        "from invarlab.world.config import WorldPreset\n"
        "print(config_hash(load_config(WorldPreset, 'tiny', [], group='world')))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash seed than this process
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.strip() == config_hash(cfg) == config_hash(load(preset="tiny"))
    assert len(config_hash(cfg)) == 64
    changed = load("world.render.ambient=0.36", preset="tiny")
    assert config_hash(changed) != config_hash(cfg)
    assert config_hash(changed, exclude=["world.render.ambient"]) == config_hash(
        cfg, exclude=["world.render.ambient"]
    )
    assert config_hash(changed, exclude=["world.render.*"]) == config_hash(cfg, exclude=["world.render.*"])
    seeds = load("datasets.clips.seed=9", preset="tiny")
    assert config_hash(seeds) != config_hash(cfg)
    assert config_hash(seeds, exclude=["datasets.*.seed"]) == config_hash(cfg, exclude=["datasets.*.seed"])


def test_to_yaml_round_trips_through_load_config(tmp_path):
    cfg = load("world.factors.azimuth=[10, 20]", "cache_dir=/tmp/x", preset="tiny")
    text = to_yaml(cfg)
    assert "resolution: 32" in text
    again = load(preset=write(tmp_path, text, "resolved.yaml"))
    assert again == cfg
