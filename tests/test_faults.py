"""Faults a user meets: a truncated or garbage newest checkpoint (resume falls back to the previous one, with
the same final parameters as an uninterrupted run), none readable (one clear error), and two trainings on one
run directory (a lock file; a stale lock from a killed run is taken over)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
import torch

from invarlab.errors import CheckpointError, ConfigError
from invarlab.train import Trainer
from invarlab.train import checkpoint as ck
from invarlab.train.lock import LOCK_FILE, run_lock
from test_train import Blobs, fresh_method, make_config


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    data, held = Blobs(40), Blobs(12, seed=1)
    full = Trainer(make_config(tmp_path / "a"), fresh_method(), data, held)
    full.fit()
    Trainer(make_config(tmp_path / "b", steps=4), fresh_method(), data, held).fit()  # step_2, step_4
    newest = ck.checkpoint_path(tmp_path / "b", 4)
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else b"\x00garbage" * 100)
    resumed = Trainer(make_config(tmp_path / "b"), fresh_method(seed=7), data, held)
    with caplog.at_level("WARNING"):
        res = resumed.fit()
    assert res.step == 6
    assert any("step_00000004.pt: unreadable" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "b" / "checkpoints" / "step_00000004.pt.corrupt").is_file()
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # from step 2 again: the same run, bit for bit


def test_no_readable_checkpoint_is_one_error(tmp_path):
    data = Blobs(40)
    Trainer(make_config(tmp_path, steps=4), fresh_method(), data).fit()
    for _, path in ck.list_checkpoints(tmp_path):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"none of its checkpoints can be read \(step_00000004.pt, step_00000002.pt"
    ):
        Trainer(make_config(tmp_path), fresh_method(), data).fit()


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, caplog):
    data = Blobs(40)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        owner = {"pid": sleeper.pid, "host": socket.gethostname(), "since": "2026-12-07 10:00:00"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(owner))
        with pytest.raises(
            ConfigError, match=rf"is in use: pid {sleeper.pid} on .* since 2026-12-07 10:00:00"
        ):
            Trainer(make_config(tmp_path), fresh_method(), data).fit()
        assert not list(tmp_path.glob("checkpoints/step_*.pt"))  # refused before writing anything
    finally:
        sleeper.kill()
        sleeper.wait()
    with caplog.at_level("WARNING"):  # its owner is gone now: a stale lock
        res = Trainer(make_config(tmp_path), fresh_method(), data).fit()
    assert res.step == 6 and any("taking over a stale lock" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "t"}))
    with pytest.raises(ConfigError, match=r"locked by pid 1 on host elsewhere.*delete the lock file"):
        Trainer(make_config(tmp_path, steps=8), fresh_method(), data).fit()


def test_the_lock_is_released_when_training_fails(tmp_path):
    with pytest.raises(RuntimeError), run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_FILE).exists()


def _poisoned(method, at: int, what: str):
    """``method`` whose training step ``at`` (1-based) gives a NaN loss, or a finite loss with NaN gradients."""
    step_fn, calls = method.training_step, []

    def training_step(images, labels, generator):
        calls.append(1)
        out = step_fn(images, labels, generator)
        if len(calls) == at:
            if what == "loss":
                out.loss = out.loss * float("nan")
            else:  # the loss stays finite; the gradient flowing back from it is NaN
                out.loss = out.loss * 1.0
                out.loss.register_hook(lambda g: g * float("nan"))
        return out

    method.training_step = training_step
    return method


def _finite_checkpoints(run_dir) -> bool:
    for _, path in ck.list_checkpoints(run_dir):
        state = ck.load_training_checkpoint(path)["method_state"]
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            return False
    return True


def test_a_nan_gradient_stops_before_the_update_and_no_nan_checkpoint_is_written(tmp_path):
    from invarlab.train.loop import NonFiniteLossError

    with pytest.raises(
        NonFiniteLossError, match=r"a gradient is NaN or infinite at step 3 .*step_00000002.pt"
    ):
        Trainer(make_config(tmp_path), _poisoned(fresh_method(), 3, "grad"), Blobs(40)).fit()
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [2] and _finite_checkpoints(tmp_path)


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_skip_mode_skips_and_counts_the_bad_update(tmp_path, caplog, what):
    cfg = make_config(tmp_path, steps=6)
    cfg.optim.nonfinite = "skip"
    trainer = Trainer(cfg, _poisoned(fresh_method(), 3, what), Blobs(40))
    with caplog.at_level("WARNING"):
        res = trainer.fit()
    assert res.step == 6 and trainer.skipped_steps == 1
    assert any(
        "step 3:" in r.getMessage() and "update skipped (1 skipped so far)" in r.getMessage()
        for r in caplog.records
    )
    assert _finite_checkpoints(tmp_path)
    assert all(torch.isfinite(p).all() for p in trainer.method.parameters())


@pytest.fixture
def disk_full(monkeypatch):
    """Every fsync of a file being written fails as on a full disk."""
    import errno

    import invarlab.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(invarlab.atomic.os, "fsync", full)


def _write_each(kind: str, tmp_path):
    """Write one file of ``kind`` into ``tmp_path`` and return its path."""
    from invarlab.results import record_result, results_path

    if kind == "checkpoint":
        return ck.atomic_save({"step": 1}, tmp_path / "checkpoints" / "step_00000001.pt")
    if kind == "results":
        record_result(tmp_path, "knn", "model", {"top1": 50.0})
        return results_path(tmp_path)
    if kind == "features":
        from invarlab.eval.features import Encoder, cached_features
        from test_eval_features import Images, _net

        backbone, head = _net()
        cached_features(tmp_path, Encoder(backbone, head, "k", "s"), Images(n=4), "imgs")
        return tmp_path / "features" / "k" / "imgs-pooled.pt"
    from invarlab.report import write_report

    return write_report(tmp_path)


@pytest.mark.parametrize("kind", ["checkpoint", "results", "features", "report"])
def test_a_full_disk_leaves_the_previous_file_and_names_it(tmp_path, kind, request):
    from invarlab.errors import StorageError

    (tmp_path / "config.yaml").write_text("method:\n  name: moco\n")
    path = _write_each(kind, tmp_path)
    before = path.read_bytes()
    if kind == "features":  # a second call would hit the cache: make the cached file stale (wrong length)
        torch.save({"features": torch.zeros(1, 2), "labels": torch.zeros(1)}, path)
        before = path.read_bytes()
    request.getfixturevalue("disk_full")
    with pytest.raises(
        StorageError, match=rf"{path.name}: cannot write the .*No space left on device.*unchanged"
    ):
        _write_each(kind, tmp_path)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]  # no temporary left behind
