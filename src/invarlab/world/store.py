"""On-disk cache of rendered datasets, keyed by a hash of everything that determines their pixels.

Rendering is the slow part of every experiment, and the same dataset (same world config, same spec)
is asked for again and again, by sweeps and by several processes at once. An entry is a directory
``<root>/<key>/`` holding one ``.npy`` per big array (opened as read-only memmaps, so a dataset
larger than RAM costs nothing to open), ``meta.npz`` (the factor columns; the source of truth),
``meta.csv`` (the same columns for people and spreadsheets), ``config.json`` and a ``COMPLETE``
marker. An entry is written under a private temporary name and renamed into place only once
complete, so a crash or a Ctrl-C can never leave something that :func:`lookup` accepts.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Bump whenever the on-disk layout or the meaning of a stored array changes: it is part of the
# hashed payload, so old entries simply stop matching instead of being misread.
FORMAT_VERSION = 1

# The per-image arrays every batch carries, with the dtype they are stored in.
ARRAYS: dict[str, np.dtype] = {
    "images": np.dtype(np.uint8),
    "instance_mask": np.dtype(np.uint8),
    "category_mask": np.dtype(np.uint8),
    "boxes": np.dtype(np.float32),
    "visible_fraction": np.dtype(np.float32),
}
COMPLETE = "COMPLETE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where entries live: explicit dir, else ``$INVARLAB_CACHE``, else ``~/.cache/invarlab/world``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("INVARLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "invarlab" / "world"


def dataset_key(config: dict[str, Any]) -> str:
    """Short stable hash of ``config``: canonical JSON (sorted keys, fixed separators), so dict order
    and formatting never change the key, but any value (or :data:`FORMAT_VERSION`) does."""
    payload = {"format_version": FORMAT_VERSION, "config": config}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _is_complete(entry: Path, key: str) -> bool:
    try:
        return (entry / COMPLETE).read_text().strip() == key
    except OSError:
        return False


def _write_meta_csv(path: Path, meta: dict[str, np.ndarray]) -> None:
    """Floats go through ``repr`` so the text round-trips exactly; bools are written ``True``/``False``."""
    cols = list(meta)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        n = len(next(iter(meta.values()))) if cols else 0
        for i in range(n):
            w.writerow([repr(meta[c][i].item()) if meta[c].dtype.kind == "f" else meta[c][i] for c in cols])


def read_meta_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Parse a ``meta.csv`` back into columns (bool, int, float, else str) for tools that only have the
    CSV; code that has the entry should use :attr:`RenderedDataset.meta`, which keeps exact dtypes."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in body]
        if vals and all(v in ("True", "False") for v in vals):
            out[name] = np.array([v == "True" for v in vals])
            continue
        for cast in (int, float):
            try:
                out[name] = np.array([cast(v) for v in vals])
                break
            except ValueError:
                pass
        else:
            out[name] = np.array(vals)
    return out


class RenderedDataset:
    """A complete cache entry. Big arrays are read-only memmaps: pages load on demand and are shared
    between processes, so opening is instant and workers forked from a loader cost no extra RAM."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        for name in ARRAYS:
            setattr(self, name, np.load(self.path / f"{name}.npy", mmap_mode="r"))
        with np.load(self.path / "meta.npz", allow_pickle=False) as z:
            self.meta: dict[str, np.ndarray] = {k: z[k] for k in z.files}
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text())

    images: np.memmap
    instance_mask: np.memmap
    category_mask: np.memmap
    boxes: np.memmap
    visible_fraction: np.memmap

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One image in the same layout as a batch, without the batch axis (meta values are numpy scalars)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for dataset of {n} images")
        item: dict[str, Any] = {name: getattr(self, name)[i] for name in ARRAYS}
        item["meta"] = {k: v[i] for k, v in self.meta.items()}
        return item

    def __repr__(self) -> str:
        return f"RenderedDataset({str(self.path)!r}, n={len(self)})"


def lookup(config: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> RenderedDataset | None:
    """The cached dataset for ``config``, or None. Only an entry whose ``COMPLETE`` marker names its own
    key counts, so half-written or foreign directories are never served."""
    key = dataset_key(config)
    entry = cache_root(cache_dir) / key
    return RenderedDataset(entry) if _is_complete(entry, key) else None


def _check_batch(batch: dict[str, Any], shapes: dict[str, tuple[int, ...]], cols: list[str] | None) -> int:
    """Validate one batch against the first one: a silent cast or broadcast would corrupt the cache."""
    b = len(batch["images"])
    for name, dtype in ARRAYS.items():
        a = batch[name]
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            raise ValueError(
                f"batch[{name!r}] must be a numpy {dtype} array, got {getattr(a, 'dtype', type(a))}"
            )
        if len(a) != b or (name in shapes and a.shape[1:] != shapes[name]):
            raise ValueError(f"batch[{name!r}] has shape {a.shape}, expected ({b}, *{shapes.get(name)})")
    meta = batch["meta"]
    if cols is not None and list(meta) != cols:
        raise ValueError(f"meta columns changed between batches: {list(meta)} vs {cols}")
    for k, v in meta.items():
        if np.ndim(v) != 1 or len(v) != b or np.asarray(v).dtype == object:
            raise ValueError(f"meta[{k!r}] must be a 1-D non-object array of length {b}")
    return b


def write(
    config: dict[str, Any],
    num_images: int,
    batches: Iterable[dict[str, Any]],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RenderedDataset:
    """Render ``batches`` into the entry for ``config`` and return it opened.

    Everything goes into a private ``<key>.partial-<pid>-<random>`` sibling first (same filesystem, so
    the final rename is atomic); any failure, including KeyboardInterrupt or a wrong image count,
    removes it. ``progress`` is called with the number of images written so far after each batch.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    key = dataset_key(config)
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = root / f"{key}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    maps: dict[str, np.memmap] = {}
    try:
        shapes: dict[str, tuple[int, ...]] = {}
        cols: list[str] | None = None
        meta_parts: dict[str, list[np.ndarray]] = {}
        done = 0
        for batch in batches:
            b = _check_batch(batch, shapes, cols)
            if done + b > num_images:
                raise ValueError(f"expected {num_images} images, got at least {done + b}")
            if not maps:
                for name, dtype in ARRAYS.items():
                    shapes[name] = batch[name].shape[1:]
                    shape = (num_images, *shapes[name])
                    maps[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shape)
                cols = list(batch["meta"])
                meta_parts = {c: [] for c in cols}
            for name in ARRAYS:
                maps[name][done : done + b] = batch[name]
            for c in meta_parts:
                meta_parts[c].append(np.asarray(batch["meta"][c]))
            done += b
            if progress is not None:
                progress(done)
        if done != num_images:
            raise ValueError(f"expected {num_images} images, got {done}")
        meta = {c: np.concatenate(parts) for c, parts in meta_parts.items()}
        np.savez(tmp / "meta.npz", **meta)
        _write_meta_csv(tmp / "meta.csv", meta)
        (tmp / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
        for m in maps.values():
            m.flush()
        maps.clear()
        (tmp / COMPLETE).write_text(key + "\n")
        return _publish(tmp, final, key)
    except BaseException:
        maps.clear()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, key: str) -> RenderedDataset:
    """Rename a finished entry into place. Entries with one key are interchangeable, so losing a race to
    another process just means using its copy; a stale incomplete ``<key>`` is moved aside and removed
    (moved first so that nobody sees it half-deleted)."""
    if final.exists() and not _is_complete(final, key):
        trash = final.with_name(f"{final.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        with contextlib.suppress(OSError):  # someone else moved or replaced it first
            os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_complete(final, key):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return RenderedDataset(final)


def get_or_render(
    config: dict[str, Any],
    num_images: int,
    make_batches: Callable[[], Iterable[dict[str, Any]]],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[RenderedDataset, bool]:
    """``(dataset, hit)``. ``make_batches`` is only called on a miss, so the renderer is never even set up
    when the cache already has the dataset."""
    ds = lookup(config, cache_dir)
    if ds is not None:
        return ds, True
    return write(config, num_images, make_batches(), cache_dir, progress), False
