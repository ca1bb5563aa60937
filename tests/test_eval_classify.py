"""Classification evaluations on a user's own data, end to end through the CLI: CIFAR-10 and STL-10 fixtures
in their distributed formats, kNN equal to scikit-learn's KNeighborsClassifier with the same weighting on the
same features; `invarlab run` on a folder config trains, evaluates on that folder and writes a report about it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from invarlab.cli import main
from invarlab.data.classification import cifar, stl10
from invarlab.eval.features import encoder_from_checkpoint, extract, random_encoder
from invarlab.nets import build_backbone, make_checkpoint
from test_data_classification import write_cifar10, write_stl10

K, T = 5, 0.1


def _cli(args: list[str]) -> None:
    """The console entry point; typer ends a successful command with SystemExit(0)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("classify") / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    torch.save(make_checkpoint(backbone), run / "checkpoints" / "step_00000005.pt")
    (run / "config.yaml").write_text("method:\n  view_size: 16\ndata:\n  source: folder\n")
    return run


def _sklearn_top1(xtr, ytr, xte, yte) -> float:
    """The kNN rule of invarlab.eval.knn computed by scikit-learn: cosine distance d = 1 - s, weights
    exp(s / T) = exp((1 - d) / T), brute-force neighbours."""
    clf = KNeighborsClassifier(
        n_neighbors=K, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / T)
    )
    clf.fit(xtr.numpy().astype(np.float64), ytr.numpy())
    return float((clf.predict(xte.numpy().astype(np.float64)) == yte.numpy()).mean() * 100)


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
def test_knn_on_distributed_formats_equals_sklearn(run_dir, tmp_path, dataset):
    if dataset == "cifar10":
        write_cifar10(tmp_path, n_per_batch=8, seed=3)
        train, test = cifar(tmp_path, "train"), cifar(tmp_path, "test")
    else:
        write_stl10(tmp_path, 30, "train", seed=4)
        write_stl10(tmp_path, 12, "test", seed=5)
        train, test = stl10(tmp_path, "train"), stl10(tmp_path, "test")
    _cli(
        [
            "eval",
            "knn",
            str(run_dir),
            "--dataset",
            dataset,
            "--root",
            str(tmp_path),
            f"knn.k={K}",
            "device=cpu",
        ]
    )
    results = json.loads((run_dir / "results.json").read_text())
    section = results[f"knn_{dataset}"]
    assert set(section) == {"model", "random"}
    meta = results["_meta"][f"knn_{dataset}"]
    assert meta["dataset"] == dataset and meta["test_images"] == len(test) and "world_preset" not in meta
    model = encoder_from_checkpoint(run_dir)
    for rep, enc in (("model", model), ("random", random_encoder(model, 0))):
        xtr, ytr = extract(enc, train, image_size=16)
        xte, yte = extract(enc, test, image_size=16)
        assert section[rep]["top1"] == pytest.approx(_sklearn_top1(xtr, ytr, xte, yte), abs=1e-9), rep
    cached = list((run_dir / "features").rglob(f"{dataset}-test-*.pt"))
    assert len(cached) == 2  # model and random, keyed by the image list


def test_bad_dataset_options_are_one_line_errors(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "knn", str(run_dir), "--dataset", "cifar10", "--root", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "cifar-10-batches-py" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["eval", "linear", str(run_dir), "--root", str(tmp_path)])
    assert "need --dataset" in capsys.readouterr().err


def _folder(root, n_per_class: int, seed: int) -> None:
    """Three colour classes of 20 px images with noise, so a random network already separates them."""
    rng = np.random.default_rng(seed)
    for cls, rgb in (("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))):
        (root / cls).mkdir(parents=True)
        for k in range(n_per_class):
            px = np.clip(np.array(rgb) + rng.normal(0, 40, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / cls / f"{k}.png")


_TINY_RUN = [
    "train.method.view_size=16",
    "train.method.width=0.125",
    "train.method.queue_size=32",
    "train.batch_size=8",
    "train.steps=3",
    "train.optim.warmup_steps=1",
    "train.knn.every_epochs=100",
    "train.device=cpu",
    "eval.device=cpu",
    "eval.knn.k=5",
    "eval.fewshot.shots=[1]",
    "eval.fewshot.ways=2",
    "eval.fewshot.queries=2",
    "eval.fewshot.trials=2",
    "eval.corruptions.names=[contrast]",
    "eval.corruptions.severities=[1]",
    "eval.retrieval_queries=2",
    "eval.retrieval_neighbours=2",
]


def test_run_on_a_folder_config_reports_that_folder(tmp_path):
    _folder(tmp_path / "train", 12, 0)
    _folder(tmp_path / "val", 4, 1)
    out = tmp_path / "run"
    _cli(
        [
            "run",
            "quickstart",
            f"train.run_dir={out}",
            "train.data.source=folder",
            f"train.data.root={tmp_path / 'train'}",
            f"train.data.monitor_root={tmp_path / 'val'}",
            "train.data.image_size=16",
            *_TINY_RUN,
        ]
    )
    results = json.loads((out / "results.json").read_text())
    for key in ("knn_folder", "linear_folder", "fewshot_folder", "corruptions_folder", "retrieval_folder"):
        assert set(results[key]) == {"model", "random"}, key
        assert results["_meta"][key]["classes"] == 3 and results["_meta"][key]["test_images"] == 12
    assert not {"knn", "invariance", "factor_probes", "svm"} & set(results)  # nothing rendered from the world
    page = (out / "report.html").read_text()
    assert "your folder" in page and "needs the world; this run trained on folder" in page
    assert (out / "figures" / "retrieval_folder.png").is_file()
    retrieval = page[page.index('id="retrieval"') :]
    assert 'alt="retrieval grid"' in retrieval.split("</section>")[0]  # the folder's grid, in its section


def _write_voc2007(root, n: int) -> list[str]:
    """VOC2007 in the devkit layout: JPEGImages, Annotations (two classes per image, one of them sometimes
    difficult), ImageSets/Main/{trainval,test}.txt."""
    from invarlab.data.voc import VOC_CLASSES

    base = root / "VOCdevkit" / "VOC2007"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "Annotations").mkdir()
    (base / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(7)
    ids = [f"{k:06d}" for k in range(n)]
    for k, i in enumerate(ids):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"{i}.jpg"
        )
        objects = ((VOC_CLASSES[k % 4], 0), (VOC_CLASSES[4 + k % 3], k % 2))
        xml = "".join(f"<object><name>{c}</name><difficult>{d}</difficult></object>" for c, d in objects)
        (base / "Annotations" / f"{i}.xml").write_text(f"<annotation>{xml}</annotation>")
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids[: n // 2]) + "\n")
    (base / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids[n // 2 :]) + "\n")
    return ids


def test_svm_on_real_voc2007_layout_equals_the_protocol_on_extracted_features(run_dir, tmp_path):
    from invarlab.data.voc import VOC_CLASSES, VOCClassification
    from invarlab.eval.svm import voc07_svm

    _write_voc2007(tmp_path, 24)
    _cli(["eval", "svm", str(run_dir), "--dataset", "voc", "--root", str(tmp_path), "device=cpu"])
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["svm_voc"]) == {"model", "random"}
    meta = results["_meta"]["svm_voc"]
    assert (meta["image_size"], meta["resize"], meta["train"]) == (16, 18, "trainval (12 images)")
    trainval = VOCClassification(tmp_path, "trainval", image_size=16, resize=18)
    test = VOCClassification(tmp_path, "test", image_size=16, resize=18)
    enc = encoder_from_checkpoint(run_dir)
    xtr, _ = extract(enc, trainval)
    xte, _ = extract(enc, test)
    expect = voc07_svm(xtr, trainval.targets, xte, test.targets, class_names=list(VOC_CLASSES))
    assert results["svm_voc"]["model"]["mAP"] == pytest.approx(expect["mAP"], abs=1e-9)


def test_run_on_a_cifar_config_trains_and_evaluates_on_cifar(tmp_path):
    write_cifar10(tmp_path, n_per_batch=6)
    out = tmp_path / "run"
    _cli(
        [
            "run",
            "quickstart",
            f"train.run_dir={out}",
            "train.data.source=cifar10",
            f"train.data.root={tmp_path}",
            *_TINY_RUN,
            "eval.evaluations=[knn,linear,retrieval]",  # 6 test images in 10 classes: too few for episodes
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["knn_cifar10"]) == {"model", "random"}
    meta = results["_meta"]["knn_cifar10"]
    assert (meta["train_images"], meta["test_images"], meta["root"]) == (30, 6, str(tmp_path))
    assert "CIFAR-10" in (out / "report.html").read_text()


def test_float16_feature_storage_gives_the_float32_neighbours(run_dir, tmp_path):
    write_cifar10(tmp_path, n_per_batch=8, seed=3)
    common = [
        "eval",
        "knn",
        str(run_dir),
        "--dataset",
        "cifar10",
        "--root",
        str(tmp_path),
        f"knn.k={K}",
        "device=cpu",
    ]
    _cli(common)
    full = json.loads((run_dir / "results.json").read_text())["knn_cifar10"]
    _cli([*common, "feature_dtype=float16"])
    half = json.loads((run_dir / "results.json").read_text())["knn_cifar10"]
    for rep in ("model", "random"):  # 8 test images: one flipped neighbour vote would move top-1 by 12.5
        assert abs(half[rep]["top1"] - full[rep]["top1"]) <= 12.5, rep
    assert list((run_dir / "features").rglob("cifar10-test-*-fp16.pt"))
