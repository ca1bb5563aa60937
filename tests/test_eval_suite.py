"""The world evaluation suite end to end on a tiny world: every evaluation writes model and random rows into
results.json, the numbers equal the evaluation functions applied to independently extracted features, and
the CLI reports bad input without a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from invarlab.cli import main
from invarlab.eval.config import EVALUATIONS, EvalConfig
from invarlab.eval.context import EvalContext
from invarlab.eval.features import encoder_from_checkpoint, extract, random_encoder
from invarlab.eval.knn import knn_accuracy
from invarlab.eval.suite import probe_factors, run_evaluations, scene_labels
from invarlab.nets import build_backbone, make_checkpoint

WORLD = """
world:
  instances_per_category: 3
  render: {{resolution: 16, supersample: 1, compile: false, batch_size: 64}}
  factors: {{occluder_prob: 0.5}}
cache_dir: {cache}
datasets:
  eval_train: {{kind: object_centric, num_images: 84, split: train, seed: 1}}
  eval_test: {{kind: object_centric, num_images: 56, split: test, seed: 2}}
  viewpoint: {{kind: viewpoint, num_images: 24, set_size: 4, seed: 3}}
  occlusion: {{kind: occlusion, num_images: 27, seed: 4}}
  probes: {{kind: object_centric, num_images: 112, split: all, seed: 5}}
  scenes: {{kind: scene_centric, num_images: 40, split: all, seed: 6}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("suite")
    (root / "world.yaml").write_text(WORLD.format(cache=root / "cache"))
    run_dir = root / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.manual_seed(3)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    torch.save(make_checkpoint(backbone), run_dir / "checkpoints" / "step_00000010.pt")
    (run_dir / "config.yaml").write_text("method:\n  view_size: 16\n")
    cfg = EvalConfig(
        world_preset=str(root / "world.yaml"),
        invariance_sets=["viewpoint", "occlusion"],
        batch_size=64,
        device="cpu",
    )
    cfg.knn.k = 10
    cfg.fewshot.shots, cfg.fewshot.trials, cfg.fewshot.queries = [1], 3, 2
    cfg.corruptions.names, cfg.corruptions.severities, cfg.corruptions.max_images = ["contrast"], [1, 5], 16
    cfg.retrieval_queries, cfg.retrieval_neighbours = 3, 4
    ctx = EvalContext(run_dir, cfg)
    results = run_evaluations(ctx)
    return ctx, results


def test_every_evaluation_has_model_and_random_rows(run):
    ctx, results = run
    assert json.loads((ctx.run_dir / "results.json").read_text()) == results
    for name in EVALUATIONS:
        assert set(results[name]) == {"model", "random"}, name
        assert name in results["_meta"]
    assert set(results["invariance"]["model"]) == {"viewpoint", "occlusion"}
    for v in results["invariance"]["model"].values():
        assert 0 <= v["top25"] <= v["top10"] <= 100
    assert {"azimuth", "category", "occlusion"} <= set(results["factor_probes"]["model"])
    assert results["corruptions"]["model"]["per_corruption"].keys() == {"contrast"}
    assert {"5way_1shot", "allway_1shot"} <= set(results["fewshot"]["model"])
    assert 0 <= results["svm"]["model"]["mAP"] <= 100


def test_numbers_equal_the_functions_on_independently_extracted_features(run):
    ctx, results = run
    model = encoder_from_checkpoint(ctx.run_dir)
    for rep, enc in (("model", model), ("random", random_encoder(model, 0))):
        xtr, ytr = extract(enc, ctx.dataset("eval_train"), image_size=16)
        xte, yte = extract(enc, ctx.dataset("eval_test"), image_size=16)
        assert results["knn"][rep] == pytest.approx(knn_accuracy(xtr, ytr, xte, yte, 10, 0.1))
    assert results["knn"]["model"] != results["knn"]["random"]


def test_retrieval_grid_is_a_png_with_one_row_per_query(run):
    ctx, results = run
    path = ctx.run_dir / results["retrieval"]["model"]["figure"]
    with Image.open(path) as im:
        w, h = im.size
    tile = 64 + 2 * 3
    assert h == 3 * tile + 2 * 3 and w == 5 * tile + 12
    assert "figure" not in results["retrieval"]["random"]


def test_scene_labels_follow_voc_conventions():
    meta = {"category_0": np.array([2, 0, -1]), "category_1": np.array([2, -1, -1])}
    visible = np.array([[0.1, 0.9], [0.2, 0.0], [0.0, 0.0]])
    labels = scene_labels(meta, visible, 3)
    # image 0: category 2 twice, one object visible enough -> positive; image 1: category 0 barely visible ->
    # difficult (0); image 2: empty -> all negative.
    assert labels.tolist() == [[-1, -1, 1], [0, -1, -1], [-1, -1, -1]]


def test_probe_factor_bins():
    meta = {
        "azimuth": np.array([0.0, 44.9, 45.0, 359.0]),
        "elevation": np.array([5.0, 15.0, 30.0, 40.0]),
        "light_azimuth": np.array([0.0, 90.0, 180.0, 270.0]),
        "light_elevation": np.array([20.0, 40.0, 60.0, 80.0]),
        "light_temperature": np.array([3000.0, 5000.0, 7000.0, 9000.0]),
        "occluder_coverage": np.array([0.0, 0.2, 0.5, 0.6]),
        "category_0": np.array([0, 0, 1, 1]),
        "instance_0": np.array([0, 1, 0, 1]),
        "name": np.array(["a", "b", "c", "d"]),
    }
    f = probe_factors(meta)
    assert f["azimuth"].tolist() == [0, 0, 1, 7]
    assert f["elevation"].tolist() == [0, 0, 2, 2]
    assert f["occlusion"].tolist() == [0, 1, 2, 2]
    assert f["instance"].tolist() == [0, 1, 2, 3]
    assert f["light_color"].tolist() == [0, 0, 1, 2]  # tertile edges 5000 and 7000 K belong to the lower bin


def test_cli_runs_one_evaluation_and_reports_bad_input(run, capsys):
    ctx, _ = run
    world = ctx.cfg.world_preset
    args = ["eval", "knn", str(ctx.run_dir), f"world_preset={world}", "knn.k=5", "device=cpu"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    assert "results:" in capsys.readouterr().out
    assert json.loads((ctx.run_dir / "results.json").read_text())["_meta"]["knn"]["k"] == 5
    for bad, message in (("knn.kk=5", "knn.k"), ("classify_test=nope", "no dataset 'nope'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "knn", str(ctx.run_dir), f"world_preset={world}", bad])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "knn", str(ctx.run_dir / "missing")])
    assert exit_info.value.code == 2 and "no such run folder" in capsys.readouterr().err
