"""One writer per run directory: ``RUN/.lock`` holds the owner's pid, host and start time while a training
process writes there.

The file is created with ``O_CREAT | O_EXCL`` (atomic: of two processes racing, one wins). A second run on the
same directory refuses with a message naming the owner. A lock whose owner is gone (same host, no such pid:
the run was SIGKILLed) is taken over with a warning; a lock from another host cannot be checked from here, so
it refuses and says how to remove it if that run is really over. The lock is removed when training ends,
normally or by an exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from invarlab.errors import ConfigError

__all__ = ["LOCK_FILE", "run_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # half-written by a process killed between create and write: treated as stale


def _try_create(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(owner, fh)
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for the duration of the ``with`` block (module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    host = socket.gethostname()
    owner = {"pid": os.getpid(), "host": host, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        if _try_create(path, owner):
            break
        held = _read(path)
        pid, where = held.get("pid"), held.get("host")
        if isinstance(pid, int) and where == host and _alive(pid):
            raise ConfigError(
                f"{run_dir} is in use: pid {pid} on {host} has been training there since {held.get('since')} "
                f"({path}); wait for it to finish, or give this run another run_dir"
            )
        if isinstance(pid, int) and where not in (None, host):
            raise ConfigError(
                f"{run_dir} is locked by pid {pid} on host {where} since {held.get('since')} ({path}); if that "
                "run is over (its machine went away), delete the lock file and start again"
            )
        log.warning(
            "%s: taking over a stale lock (pid %s on %s, since %s, is gone)",
            path,
            pid,
            where,
            held.get("since"),
        )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise ConfigError(f"{path}: could not take the run lock (another process keeps creating it)")
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
