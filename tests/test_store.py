"""The rendered-dataset cache: exact round trips, and no half-written entry ever served."""

from __future__ import annotations

import numpy as np
import pytest

from invarlab.world import store

H, W, O = 8, 6, 3
CONFIG = {"world": {"image_size": 8, "seed": 1}, "spec": {"name": "toy", "n": 10}}


def make_batches(num_images: int, batch_size: int = 4, seed: int = 0, fail_after: int | None = None):
    """Synthetic batches shaped like the renderer's; raises after ``fail_after`` batches if set."""
    rng = np.random.default_rng(seed)
    done = 0
    k = 0
    while done < num_images:
        if fail_after is not None and k == fail_after:
            raise RuntimeError("renderer crashed")
        b = min(batch_size, num_images - done)
        yield {
            "images": rng.integers(0, 256, (b, 3, H, W), dtype=np.uint8),
            "instance_mask": rng.integers(0, O + 1, (b, H, W), dtype=np.uint8),
            "category_mask": rng.integers(0, 5, (b, H, W), dtype=np.uint8),
            "boxes": rng.random((b, O, 4), dtype=np.float32),
            "visible_fraction": rng.random((b, O), dtype=np.float32),
            "meta": {
                "azimuth": rng.random(b) * 360.0,
                "category": rng.integers(0, 5, b),
                "occluded": rng.random(b) < 0.5,
            },
        }
        done += b
        k += 1


def concat(batches):
    batches = list(batches)
    out = {k: np.concatenate([b[k] for b in batches]) for k in store.ARRAYS}
    out["meta"] = {c: np.concatenate([b["meta"][c] for b in batches]) for c in batches[0]["meta"]}
    return out


def entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_write_then_lookup_is_exact(tmp_path):
    seen = []
    ds = store.write(CONFIG, 10, make_batches(10), tmp_path, progress=seen.append)
    assert seen == [4, 8, 10]
    hit = store.lookup(CONFIG, tmp_path)
    assert hit is not None and hit.path == ds.path == tmp_path / store.dataset_key(CONFIG)
    assert entries(tmp_path) == [store.dataset_key(CONFIG)]
    ref = concat(make_batches(10))
    assert len(hit) == 10
    for name, dtype in store.ARRAYS.items():
        arr = getattr(hit, name)
        assert isinstance(arr, np.memmap) and arr.dtype == dtype and not arr.flags.writeable
        assert arr.tobytes() == ref[name].tobytes()
    assert list(hit.meta) == ["azimuth", "category", "occluded"]
    for c, v in ref["meta"].items():
        assert hit.meta[c].dtype == v.dtype and hit.meta[c].tobytes() == v.tobytes()
    assert hit.config == CONFIG
    item = hit[-1]
    assert np.array_equal(item["images"], ref["images"][9]) and item["boxes"].shape == (O, 4)
    assert item["meta"]["azimuth"] == ref["meta"]["azimuth"][9]
    with pytest.raises(IndexError):
        hit[10]
    csv_meta = store.read_meta_csv(hit.path / "meta.csv")
    for c, v in ref["meta"].items():
        assert np.array_equal(csv_meta[c], v)


def test_different_config_is_a_miss(tmp_path):
    store.write(CONFIG, 5, make_batches(5), tmp_path)
    other = {**CONFIG, "spec": {"name": "toy", "n": 11}}
    assert store.lookup(other, tmp_path) is None


def test_crash_midway_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="crashed"):
        store.write(CONFIG, 10, make_batches(10, fail_after=1), tmp_path)
    assert store.lookup(CONFIG, tmp_path) is None
    assert entries(tmp_path) == []


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    def interrupted():
        yield next(make_batches(4))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write(CONFIG, 8, interrupted(), tmp_path)
    assert entries(tmp_path) == []


def test_incomplete_entry_is_not_a_hit_and_is_replaced(tmp_path):
    key = store.dataset_key(CONFIG)
    stale = tmp_path / key
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"garbage")
    assert store.lookup(CONFIG, tmp_path) is None
    (stale / store.COMPLETE).write_text("0123456789abcdef\n")  # marker for another key: still not a hit
    assert store.lookup(CONFIG, tmp_path) is None
    store.write(CONFIG, 6, make_batches(6), tmp_path)
    hit = store.lookup(CONFIG, tmp_path)
    assert hit is not None and len(hit) == 6
    assert entries(tmp_path) == [key]


def test_lost_race_returns_existing_entry(tmp_path):
    first = store.write(CONFIG, 6, make_batches(6), tmp_path)
    second = store.write(CONFIG, 6, make_batches(6), tmp_path)
    assert second.path == first.path and entries(tmp_path) == [store.dataset_key(CONFIG)]


@pytest.mark.parametrize("num_images", [7, 12])
def test_wrong_count_raises_and_leaves_nothing(tmp_path, num_images):
    with pytest.raises(ValueError, match=f"expected {num_images} images, got"):
        store.write(CONFIG, num_images, make_batches(10), tmp_path)
    assert entries(tmp_path) == []


def test_bad_dtype_raises(tmp_path):
    batch = next(make_batches(4))
    batch["boxes"] = batch["boxes"].astype(np.float64)
    with pytest.raises(ValueError, match="boxes"):
        store.write(CONFIG, 4, [batch], tmp_path)
    assert entries(tmp_path) == []


def test_get_or_render_calls_renderer_only_on_miss(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return make_batches(5)

    ds, hit = store.get_or_render(CONFIG, 5, make, tmp_path)
    assert not hit and len(ds) == 5 and len(calls) == 1
    ds2, hit2 = store.get_or_render(CONFIG, 5, make, tmp_path)
    assert hit2 and ds2.path == ds.path and len(calls) == 1


def test_dataset_key_canonical():
    a = {"x": 1, "y": {"p": [1, 2], "q": "s"}}
    b = {"y": {"q": "s", "p": [1, 2]}, "x": 1}
    key = store.dataset_key(a)
    assert len(key) == 16 and int(key, 16) >= 0
    assert store.dataset_key(b) == key
    assert store.dataset_key({"x": 1, "y": {"p": [1, 3], "q": "s"}}) != key
    assert store.dataset_key({"x": 1.5, "y": {"p": [1, 2], "q": "s"}}) != key


def test_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("INVARLAB_CACHE", str(tmp_path / "env"))
    assert store.cache_root() == tmp_path / "env"
    assert store.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("INVARLAB_CACHE")
    assert store.cache_root().parts[-3:] == (".cache", "invarlab", "world")
