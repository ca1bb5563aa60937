"""Atomic file writes: every file invarlab writes for a user (checkpoints, results.json, feature caches,
reports, study pages) goes through :func:`atomic_write`.

The bytes go to a hidden temporary file beside the target, are flushed and fsynced, and ``os.replace`` renames
it over the target (atomic within one file system); the directory is then fsynced so the rename survives a
power cut. On any failure - a full disk, a read-only file system, a permission, a KeyboardInterrupt - the
temporary is removed and the target keeps its previous content. An ``OSError`` becomes a
:class:`~invarlab.errors.StorageError` naming the file and the cause, which the CLI prints in one line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

from invarlab.errors import StorageError

__all__ = ["TMP_MARK", "atomic_write", "atomic_write_text", "fsync_dir"]

TMP_MARK = ".tmp-"  # in every temporary's name: stale ones (a SIGKILLed write) are found by it


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not possible, nor needed, on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], what: str = "file"
) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically (module docstring); ``what`` names the file
    in the error (``checkpoint``, ``results``, ...)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise StorageError(
                f"{path}: cannot write the {what} ({err.strerror or err}); the previous file, if any, is "
                "unchanged. Free disk space or make the folder writable, then run again."
            ) from err
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), what)
