"""Studies: the 95% intervals equal scipy.stats' on the same per-seed numbers, claims get the right verdicts,
bad study files name the key, and the tiny study runs end to end, survives a kill and resumes without
re-running finished cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from invarlab.errors import ConfigError
from invarlab.study.runner import DONE_FILE, cells, pending_cells
from invarlab.study.spec import load_study
from invarlab.study.stats import REPRODUCED, REVERSED, UNRESOLVED, bootstrap_interval, mean_interval, verdict


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0], [10.0, 10.5], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]])
def test_t_interval_equals_scipy(values):
    got = mean_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    one = mean_interval([5.0])
    assert one["mean"] == 5.0 and np.isnan(one["half_width"])
    blo, bhi = bootstrap_interval(values, resamples=2000)
    assert min(values) <= blo <= np.mean(values) <= bhi <= max(values)


def test_verdicts_follow_the_paired_interval():
    a = {0: 10.0, 1: 11.0, 2: 12.0}
    assert verdict(a, {0: 5.0, 1: 6.2, 2: 6.9})["verdict"] == REPRODUCED
    assert verdict({k: -v for k, v in a.items()}, {0: 0.0, 1: 0.0, 2: 0.0})["verdict"] == REVERSED
    assert verdict(a, {0: 12.0, 1: 9.0, 2: 12.5})["verdict"] == UNRESOLVED
    one = verdict({0: 3.0}, {0: 1.0, 1: 2.0})
    assert one["verdict"] == UNRESOLVED and one["seeds"] == [0]


def test_bad_study_files_name_the_key(tmp_path):
    def bad(text: str, match: str) -> None:
        path = tmp_path / "s.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_study(path)

    runs = "runs: {a: {config: quickstart}}\n"
    bad("seeds: 0\n" + runs, "seeds must be")
    bad("runs: {a: {overrides: [x=1]}}\n", "runs.a needs config")
    bad(
        runs + "claims: [{claim: x, a: a/knn.model.top1, b: z/knn.model.top1}]\n",
        r"claims\[0\]\.b: unknown run 'z'",
    )
    bad(runs + "claims: [{claim: x, a: a/invariance.*.top1, b: a/knn.model.top1}]\n", "cannot hold")
    bad(runs + "tables: [{title: t}]\n", "either metric")
    bad(runs + "colour: 1\n", "unknown key")


def _study(out, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "invarlab.cli", "study", "tiny", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def test_tiny_study_is_resumable_and_its_intervals_are_scipys(tmp_path):
    out = tmp_path / "study"
    study = load_study("tiny", out)
    grid = cells(study)
    listed = subprocess.run(
        [sys.executable, "-m", "invarlab.cli", "study", "tiny", "--out", str(out), "--print-commands"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert listed == [c.command() for c in grid] and len(listed) == 4
    assert all("train.seed=" in line and "eval.random_seed=" in line for line in listed)

    proc = _study(out)  # killed once its first cell has finished
    first = grid[0].dir / DONE_FILE
    deadline = time.time() + 240
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.is_file(), proc.stdout.read() if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stamp = first.stat().st_mtime_ns
    assert len(pending_cells(grid)) >= 2  # the kill left work to do

    done = subprocess.run(  # the rest in two parallel processes, one core each
        [sys.executable, "-m", "invarlab.cli", "study", "tiny", "--out", str(out), "--jobs", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not run again
    assert pending_cells(grid) == []
    data = json.loads((out / "study.json").read_text())
    assert data["finished"] == 4
    for run in ("moco", "simclr"):
        per_seed = [
            json.loads((out / run / f"seed{k}" / "results.json").read_text())["knn"]["model"]["top1"]
            for k in (0, 1)
        ]
        entry = data["runs"][run]["metrics"]["knn.model.top1"]
        assert entry["values"] == pytest.approx(per_seed)
        if np.std(per_seed) > 0:
            lo, hi = stats.t.interval(0.95, 1, loc=np.mean(per_seed), scale=stats.sem(per_seed))
            assert (entry["ci_low"], entry["ci_high"]) == pytest.approx((lo, hi))
    claim = data["claims"][0]
    assert claim["claim"] == "kNN: MoCo v2 > SimCLR" and claim["verdict"] in (
        REPRODUCED,
        REVERSED,
        UNRESOLVED,
    )
    table = data["tables"][0]
    assert set(table["rows"]) == {"moco", "simclr", "moco floor"} and list(table["columns"]) == [
        "kNN top-1",
        "linear top-1",
    ]
    assert "## Claims" in (out / "study.md").read_text()
    assert "study bars" in (out / "study.html").read_text()

    edited = tmp_path / "edited.yaml"  # a changed grid must not silently reuse finished cells
    edited.write_text(study.path.read_text().replace("train.steps=4", "train.steps=5"))
    with pytest.raises(ConfigError, match="delete the folder to rerun it"):
        pending_cells(cells(load_study(edited, out)))
