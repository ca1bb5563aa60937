"""Training checkpoints: atomic writes, discovery of the newest one, RNG state capture and restore.

A checkpoint is ``RUN/checkpoints/step_NNNNNNNN.pt``, a dict in invarlab's layout
(:func:`invarlab.nets.checkpoints.make_checkpoint`: the backbone under torchvision names, so
``load_checkpoint`` and ``invarlab export`` read it) plus the training state: ``method_state`` (the method's full
state dict: heads, momentum encoder, queues), ``optimizer``, ``scheduler``, ``scaler``, ``step``, ``epoch``,
``rng`` (one entry per rank) and ``config``. Everything is tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``.

Writes are atomic: the bytes go to a hidden temporary file in the same directory, are flushed and fsynced,
and ``os.replace`` renames it over the final name (atomic on POSIX and Windows within one file system), then
the directory is fsynced so the rename survives a power cut. A crash at any moment leaves either the old
set of checkpoints or the new one, never a file named ``step_*.pt`` that is incomplete.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invarlab.atomic import TMP_MARK, atomic_write
from invarlab.errors import CheckpointError
from invarlab.nets.checkpoints import read_checkpoint

__all__ = [
    "CHECKPOINT_DIR",
    "atomic_save",
    "capture_rng",
    "checkpoint_path",
    "find_latest",
    "list_checkpoints",
    "load_training_checkpoint",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "restore_rng",
]

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TMP_MARK = TMP_MARK
# Keys a training checkpoint must hold for a resume; anything else may be added freely.
REQUIRED = ("method_state", "optimizer", "step", "rng")


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``RUN/checkpoints/step_NNNNNNNN.pt`` (zero-padded, so names sort by step)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`invarlab.atomic.atomic_write`: temporary file in the
    same directory, fsync, os.replace). On any failure, including KeyboardInterrupt, the temporary file is
    removed and ``path`` is untouched; a full disk or read-only folder is a StorageError naming the file."""
    return atomic_write(path, lambda fh: torch.save(obj, fh), "checkpoint")


def _ckpt_dir(run_dir: str | os.PathLike[str]) -> Path:
    p = Path(run_dir)
    return p if p.name == CHECKPOINT_DIR else p / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint of a run (or of a ``checkpoints/`` folder), by step."""
    d = _ckpt_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def find_latest(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or None. Temporary files of an interrupted write never match."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``keep=0`` keeps all); returns the deleted paths."""
    found = list_checkpoints(run_dir)
    if keep <= 0 or len(found) <= keep:
        return []
    doomed = [p for _, p in found[:-keep]]
    for p in doomed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return doomed


def remove_stale_temporaries(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files left by a write that was killed (SIGKILL gives no chance to clean up)."""
    d = _ckpt_dir(run_dir)
    if not d.is_dir():
        return []
    stale = [p for p in d.iterdir() if p.name.startswith(".") and _TMP_MARK in p.name]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


# ------------------------------------------------------------------------------------------------- RNG
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a step can touch: torch CPU, CUDA (all devices, if initialised), Python ``random``,
    NumPy's global generator and the trainer's own ``generator``. Stored as tensors and plain values."""
    # The legacy global generator is what third-party code draws from, so it is the one to capture.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`. CUDA states are restored only when the device count matches."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (weights-only unpickling); a truncated, corrupt or foreign file raises
    :class:`CheckpointError` naming it."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        have = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not an invarlab training checkpoint (needs {', '.join(REQUIRED)}; has {have}). "
            "To start from pretrained weights, load them into the backbone instead of resuming."
        )
    return ckpt
