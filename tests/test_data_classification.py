"""Classification sets in their distributed layouts, written by the tests in those layouts from known pixels:
CIFAR-10 / CIFAR-100 pickles, STL-10 binary (column-major planes), ImageNet with a folder or a flat val and each
label-file format, ImageFolder pairs; every bad layout gets one clear error naming the path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from invarlab.data.classification import (
    CLASSIFICATION_DATASETS,
    cifar,
    classification_pair,
    dataset_identity,
    folder_pair,
    imagenet,
    stl10,
)
from invarlab.errors import DataError
from invarlab.eval.classify_config import CLASSIFY_DATASETS


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 HWC: the oracle the loaders' CHW output is compared with."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _cifar_rows(hwc: np.ndarray) -> np.ndarray:
    # CIFAR's documented row: 1,024 red values, then green, then blue, each plane row by row.
    return np.stack([np.concatenate([img[:, :, c].reshape(-1) for c in range(3)]) for img in hwc])


def write_cifar10(root, n_per_batch: int = 4, seed: int = 0):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n_per_batch}, fh, protocol=2)
    out = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        hwc = _images(n_per_batch, 32, seed + k)
        labels = [int(x) for x in np.random.default_rng(seed + 100 + k).integers(0, 10, n_per_batch)]
        with open(base / name, "wb") as fh:
            pickle.dump(
                {b"data": _cifar_rows(hwc), b"labels": labels, b"batch_label": name.encode()}, fh, protocol=2
            )
        out[name] = (hwc, labels)
    return out


def test_cifar10_pixels_labels_and_classes_match_the_written_batches(tmp_path):
    written = write_cifar10(tmp_path)
    train = cifar(tmp_path, "train", "cifar10")
    assert len(train) == 20 and train.classes[0] == "airplane" and train.num_classes == 10
    expect = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = [y for i in range(1, 6) for y in written[f"data_batch_{i}"][1]]
    for i in (0, 7, 19):
        image, label, index = train[i]
        assert image.dtype.is_floating_point is False and image.shape == (3, 32, 32)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expect[i])
        assert (label, index) == (labels[i], i)
    test = cifar(tmp_path / "cifar-10-batches-py", "test", "cifar10")  # the folder itself works too
    np.testing.assert_array_equal(test[3][0].permute(1, 2, 0).numpy(), written["test_batch"][0][3])
    assert dataset_identity(train) != dataset_identity(test)


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    with open(base / "meta", "wb") as fh:
        pickle.dump(
            {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}, fh
        )
    hwc = _images(6, 32, 5)
    fine = [99, 0, 42, 7, 7, 1]
    for split in ("train", "test"):
        with open(base / split, "wb") as fh:
            pickle.dump({b"data": _cifar_rows(hwc), b"fine_labels": fine, b"coarse_labels": [0] * 6}, fh)
    ds = cifar(tmp_path, "test", "cifar100")
    assert ds.labels.tolist() == fine and ds.classes[99] == "c99"
    np.testing.assert_array_equal(ds[2][0].permute(1, 2, 0).numpy(), hwc[2])


def test_cifar_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py/batches.meta"):
        cifar(tmp_path, "train", "cifar10")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_3.*re-extract"):
        cifar(tmp_path, "train", "cifar10")


def write_stl10(root, n: int, split: str, seed: int = 0):
    base = root / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    hwc = _images(n, 96, seed)
    # STL-10's documented order: per image, per channel, the plane column by column (Fortran order).
    raw = b"".join(img[:, :, c].reshape(-1, order="F").tobytes() for img in hwc for c in range(3))
    (base / f"{split}_X.bin").write_bytes(raw)
    labels = np.random.default_rng(seed).integers(1, 11, n).astype(np.uint8)
    (base / f"{split}_y.bin").write_bytes(labels.tobytes())
    (base / "class_names.txt").write_text(
        "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"])
    )
    return hwc, labels.astype(np.int64) - 1


def test_stl10_column_major_planes_decode_to_the_written_images(tmp_path):
    hwc, labels = write_stl10(tmp_path, 5, "train", seed=1)
    ds = stl10(tmp_path, "train")
    assert ds.labels.tolist() == labels.tolist() and ds.classes[7] == "monkey"
    for i in range(5):
        np.testing.assert_array_equal(ds[i][0].permute(1, 2, 0).numpy(), hwc[i])
    (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=r"train_X.bin.*100 bytes"):
        stl10(tmp_path, "train")


def _write_png(path, rgb: tuple[int, int, int], size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)


def test_folder_pair_uses_the_training_classes_and_rejects_unknown_ones(tmp_path):
    for cls, rgb in (("ant", (255, 0, 0)), ("bee", (0, 255, 0)), ("cat", (0, 0, 255))):
        for k in range(2):
            _write_png(tmp_path / "train" / cls / f"{k}.png", rgb)
    _write_png(tmp_path / "val" / "cat" / "0.png", (0, 0, 255))
    train, test = folder_pair(tmp_path / "train", tmp_path / "val", 8)
    assert train.classes == test.classes == ["ant", "bee", "cat"]
    assert test.labels.tolist() == [2] and test[0][0][2].float().mean() > 200
    _write_png(tmp_path / "val" / "dog" / "0.png", (9, 9, 9))
    with pytest.raises(DataError, match=r"dog.*training folder"):
        folder_pair(tmp_path / "train", tmp_path / "val", 8)
    with pytest.raises(DataError, match="test folder"):
        folder_pair(tmp_path / "train", "", 8)


def _imagenet_train(root, wnids=("n01", "n02", "n03")):
    for k, w in enumerate(wnids):
        _write_png(root / "train" / w / f"{w}_0.JPEG", (80 * k, 0, 0))
    (root / "val").mkdir(parents=True, exist_ok=True)


def _flat_val(root, labels: list[str]) -> list[str]:
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(1, len(labels) + 1)]
    for name, w in zip(names, labels, strict=True):
        _write_png(root / "val" / f"{name}.JPEG", (80 * int(w[-1]) - 80, 0, 0))
    return names


def test_imagenet_flat_val_with_kaggle_csv(tmp_path):
    _imagenet_train(tmp_path)
    names = _flat_val(tmp_path, ["n02", "n01", "n03", "n02"])
    # Each image's first box names its class; a second box of another class must not count.
    rows = ["ImageId,PredictionString"] + [
        f"{n},{w} 1 2 3 4 n03 5 6 7 8" for n, w in zip(names, ["n02", "n01", "n03", "n02"], strict=True)
    ]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    train, val = imagenet(tmp_path, 8)
    assert train.classes == ["n01", "n02", "n03"]
    assert val.labels.tolist() == [1, 0, 2, 1]


def test_imagenet_flat_val_with_devkit_ground_truth(tmp_path):
    from scipy.io import savemat

    _imagenet_train(tmp_path)
    _flat_val(tmp_path, ["n03", "n01", "n02"])
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # ILSVRC2012_IDs are not the sorted-wnid order: id 1 -> n03, 2 -> n01, 3 -> n02.
    synsets = np.array(
        [(1, "n03", 0), (2, "n01", 0), (3, "n02", 0)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")],
    )
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n")
    _, val = imagenet(tmp_path, 8)
    assert val.labels.tolist() == [2, 0, 1]


def test_imagenet_text_labels_folder_val_and_errors(tmp_path):
    _imagenet_train(tmp_path)
    names = _flat_val(tmp_path, ["n01", "n03"])
    with pytest.raises(DataError, match="no label file"):
        imagenet(tmp_path, 8)
    (tmp_path / "val_labels.txt").write_text(f"{names[0]}.JPEG n01\n{names[1]}.JPEG 2\n")
    assert imagenet(tmp_path, 8)[1].labels.tolist() == [0, 2]
    (tmp_path / "val_labels.txt").write_text(f"{names[0]}.JPEG n09\n{names[1]}.JPEG n01\n")
    with pytest.raises(DataError, match="n09 have no folder"):
        imagenet(tmp_path, 8)
    (tmp_path / "val_labels.txt").write_text(f"{names[0]}.JPEG 7\n{names[1]}.JPEG n01\n")
    with pytest.raises(DataError, match="class index 7 is out of range"):
        imagenet(tmp_path, 8)
    (tmp_path / "val_labels.txt").write_text("n01\nn03\n")
    with pytest.raises(DataError, match="must be ILSVRC2012_IDs"):
        imagenet(tmp_path, 8)
    (tmp_path / "val" / ".ipynb_checkpoints").mkdir()  # a hidden folder does not make val a class-folder val
    (tmp_path / "val_labels.txt").write_text(f"{names[0]}.JPEG n01\n{names[1]}.JPEG 2\n")
    assert imagenet(tmp_path, 8)[1].labels.tolist() == [0, 2]
    _write_png(tmp_path / "no_val" / "train" / "n01" / "a.JPEG", (0, 0, 0))
    with pytest.raises(DataError, match="no_val' has no val/ folder"):
        imagenet(tmp_path / "no_val", 8)


def test_classification_pair_dispatch_and_names(tmp_path):
    assert ("world", *CLASSIFICATION_DATASETS) == CLASSIFY_DATASETS
    write_cifar10(tmp_path)
    train, test = classification_pair("cifar10", image_size=32, root=str(tmp_path))
    assert (len(train), len(test)) == (20, 4)
    with pytest.raises(DataError, match="needs --root"):
        classification_pair("stl10", image_size=32)
    with pytest.raises(DataError, match="unknown classification dataset 'mnist'"):
        classification_pair("mnist", image_size=32, root=str(tmp_path))
