"""The CLI: error paths print one line and exit 2, --help shows every default, commands reach the world API.

The world API is replaced by a fake module in ``sys.modules`` (inside each test only), so these tests check
the CLI's own behaviour: argument parsing, config loading, what it passes on and what it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import invarlab
from invarlab.cli import app, main
from invarlab.errors import DataError
from invarlab.world.config import WorldPreset

EXE = Path(sys.executable).with_name("invarlab")


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the console entry point in-process; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture
def fake_api(monkeypatch, tmp_path):
    """A stand-in for invarlab.world.api that records its calls; one dataset is 'cached' before the call."""
    monkeypatch.setenv("COLUMNS", "250")  # keep rich from folding table cells
    calls: dict = {}
    cached = tmp_path / "cache" / "old"
    cached.mkdir(parents=True)
    os.utime(cached, (time.time() - 3600, time.time() - 3600))

    def render_preset(preset):
        calls["render"] = preset
        paths = {}
        for i, name in enumerate(preset.datasets):
            paths[name] = cached if i == 0 else tmp_path / "cache" / name
            paths[name].mkdir(exist_ok=True)
        return paths

    def show_preset(preset, out_dir):
        calls["show"] = (preset, out_dir)
        return [Path(out_dir) / f"{name}.png" for name in preset.datasets]

    module = types.ModuleType("invarlab.world.api")
    module.render_preset, module.show_preset = render_preset, show_preset
    monkeypatch.setitem(sys.modules, "invarlab.world.api", module)
    return calls


def test_console_script_unknown_key_one_line_exit_2():
    assert EXE.exists(), "install the package into the venv: pip install -e . --no-deps"
    proc = subprocess.run(
        [str(EXE), "world", "render", "tiny", "world.render.resolutoin=32"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: unknown key 'world.render.resolutoin'")
    assert "did you mean: world.render.resolution?" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


def test_console_script_version():
    proc = subprocess.run([str(EXE), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"invarlab {invarlab.__version__}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["world.render.resolution=abc"], ["'world.render.resolution'", "abc", "expected int"]),
        (["world.render.resolution=8"], ["'world.render.resolution' = 8", "16..1024"]),
        (["datasets.x.kind=clip"], ["'datasets.x.kind' = clip", "object_centric", "instance_viewpoint"]),
        (["datasets.x.knd=clips"], ["did you mean: datasets.x.kind?"]),
        (["world.factors.azimuth=[90,0]"], ["'world.factors.azimuth'", "lo <= hi"]),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, fake_api, argv, expected):
    code, _, err = run_main(capsys, "world", "render", "tiny", *argv)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert "render" not in fake_api  # failed before any rendering


def test_unknown_preset_lists_available(capsys, fake_api):
    code, _, err = run_main(capsys, "world", "show", "nosuch")
    assert code == 2
    assert "unknown world preset 'nosuch'" in err and "default" in err and "tiny" in err


def test_preset_and_config_together_is_an_error(capsys, fake_api, tmp_path):
    code, _, err = run_main(capsys, "world", "render", "tiny", "--config", str(tmp_path / "x.yaml"))
    assert code == 2 and "not both" in err


def test_missing_config_file(capsys, fake_api, tmp_path):
    code, _, err = run_main(capsys, "world", "render", "--config", str(tmp_path / "absent.yaml"))
    assert code == 2 and "config file not found" in err and "absent.yaml" in err


def test_user_error_from_the_api_is_reported_not_raised(capsys, monkeypatch, fake_api):
    def broken(preset):
        raise DataError("cache folder /nope is not writable; set cache_dir=...")

    monkeypatch.setattr(sys.modules["invarlab.world.api"], "render_preset", broken)
    code, _, err = run_main(capsys, "world", "render", "tiny")
    assert code == 2
    assert err.strip() == "error: cache folder /nope is not writable; set cache_dir=..."


def test_render_passes_the_resolved_preset_and_prints_the_table(capsys, fake_api):
    code, out, err = run_main(capsys, "world", "render", "tiny", "world.render.resolution=48")
    assert code == 0, err
    preset = fake_api["render"]
    assert isinstance(preset, WorldPreset)
    assert preset.world.render.resolution == 48 and preset.world.instances_per_category == 4
    rows = {line.split()[1]: line for line in out.splitlines() if "cache" in line and "│" in line}
    names = list(preset.datasets)
    assert set(rows) == set(names)
    assert "hit" in rows[names[0]] and "miss" not in rows[names[0]]
    assert all("miss" in rows[n] and " 16 " in rows[n] for n in names[1:])


def test_render_reads_path_hit_and_dataset_from_result_objects(capsys, monkeypatch, fake_api, tmp_path):
    def render_preset(preset):
        return {
            name: types.SimpleNamespace(path=tmp_path / name, hit=name == "clips", dataset=[0] * (i + 3))
            for i, name in enumerate(preset.datasets)
        }

    monkeypatch.setattr(sys.modules["invarlab.world.api"], "render_preset", render_preset)
    code, out, err = run_main(capsys, "world", "render", "tiny")
    assert code == 0, err
    rows = {line.split()[1]: line.split() for line in out.splitlines() if str(tmp_path) in line}
    assert rows["object_centric"][3:8:2] == ["3", str(tmp_path / "object_centric"), "miss"]
    assert rows["clips"][3:8:2] == ["7", str(tmp_path / "clips"), "hit"]


def test_config_file_replaces_preset_and_overrides_follow(capsys, fake_api, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("datasets:\n  only:\n    kind: clips\n    num_images: 7\n")
    code, _, err = run_main(capsys, "world", "render", "--config", str(config), "datasets.only.seed=3")
    assert code == 0, err
    assert list(fake_api["render"].datasets) == ["only"]
    spec = fake_api["render"].datasets["only"]
    assert (spec.kind, spec.num_images, spec.seed) == ("clips", 7, 3)


def test_no_preset_means_default(capsys, fake_api):
    code, _, err = run_main(capsys, "world", "render")
    assert code == 0, err
    assert {n: d.num_images for n, d in fake_api["render"].datasets.items()} == {
        "object_centric": 1000,
        "scene_centric": 1000,
        "cropped_boxes": 1000,
    }


def test_show_passes_out_dir_and_prints_paths(capsys, fake_api, tmp_path):
    code, out, _ = run_main(capsys, "world", "show", "tiny", "--out", str(tmp_path / "pics"))
    assert code == 0
    preset, out_dir = fake_api["show"]
    assert out_dir == tmp_path / "pics" and preset.world.render.resolution == 32
    assert out.split() == [str(tmp_path / "pics" / f"{n}.png") for n in preset.datasets]
    run_main(capsys, "world", "show", "tiny")
    assert fake_api["show"][1] == Path("demo_out")


@pytest.mark.parametrize("command", ["render", "show"])
def test_help_lists_options_with_defaults_and_ranges(command):
    result = CliRunner().invoke(app, ["world", command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # rich wraps at the terminal width
    assert "world.render.resolution = 64 (16..1024) image height and width in pixels" in text
    assert "world.factors.azimuth = [0.0, 360.0] camera azimuth range, degrees [lo, hi]" in text
    assert "datasets.<name>.kind = object_centric (object_centric|scene_centric" in text
    assert "cache_dir = ''" in text
    assert "--config" in text
