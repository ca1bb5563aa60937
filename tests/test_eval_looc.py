"""P3's evaluations (docs/eval_looc.md) on a tiny LooC run trained a few steps on a tiny world: every LooC space
and LooC++ as a representation (equal to ``LooC.representations``), the rotation probe against hand-built
equivariant / invariant modules, grouped splits, colour and texture targets against independent oracles,
fine-grained loaders on fixtures in the official layouts, results.json rows, the CLI and the report section."""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from invarlab.cli import main
from invarlab.data import WorldDataset
from invarlab.data.finegrained import cub200, flowers102
from invarlab.errors import CheckpointError, ConfigError, DataError
from invarlab.eval.config import EvalConfig
from invarlab.eval.context import EvalContext
from invarlab.eval.features import encoder_from_checkpoint
from invarlab.eval.finegrained import finegrained_scores
from invarlab.eval.knn import knn_accuracy
from invarlab.eval.sensitivity import (
    dominant_hue,
    grouped_split,
    rgb_to_hsv,
    rotation_copies,
    rotation_probe,
    texture_family,
)
from invarlab.eval.suite import run_evaluations
from invarlab.methods import MethodConfig, build_method, load_looc
from invarlab.nets import build_backbone, make_checkpoint
from invarlab.report.html import write_report
from invarlab.train import Trainer
from invarlab.train.config import TrainConfig
from invarlab.views.ops import normalize, to_float
from invarlab.world.catalog import build_instance
from invarlab.world.shading import TEXTURE_KINDS

WORLD = """
world:
  instances_per_category: 3
  render: {{resolution: 16, supersample: 1, compile: false, batch_size: 64}}
  factors: {{occluder_prob: 0.3}}
cache_dir: {cache}
datasets:
  train: {{kind: object_centric, num_images: 32, split: train, seed: 0}}
  eval_train: {{kind: object_centric, num_images: 56, split: train, seed: 1}}
  eval_test: {{kind: object_centric, num_images: 42, split: test, seed: 2}}
  probes: {{kind: object_centric, num_images: 60, split: all, seed: 5}}
  finegrained: {{kind: object_centric, num_images: 72, categories: [mug, mushroom], split: all, seed: 6}}
"""
EVALS = ["knn", "fewshot", "corruptions", "sensitivity", "finegrained"]
SPACES = ["z0", "z_colour", "z_rotation", "looc++"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _eval_config(world: str, **kw) -> EvalConfig:
    cfg = EvalConfig(world_preset=world, batch_size=64, device="cpu", **kw)
    cfg.looc.spaces = True
    cfg.knn.k = 10
    cfg.fewshot.shots, cfg.fewshot.trials, cfg.fewshot.queries = [1], 2, 2
    cfg.corruptions.names, cfg.corruptions.severities, cfg.corruptions.max_images = ["contrast"], [3], 12
    cfg.sensitivity.rotation_images = cfg.sensitivity.jitter_images = 16
    cfg.finegrained.shots, cfg.finegrained.trials = [2, 5], 2
    return cfg


@pytest.fixture(scope="module")
def looc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("looc_eval")
    world = root / "world.yaml"
    world.write_text(WORLD.format(cache=root / "cache"))
    ctx0 = EvalContext(root, EvalConfig(world_preset=str(world), device="cpu"))
    train_set = ctx0.dataset("train")
    mcfg = MethodConfig(
        name="looc",
        looc_augs=["color", "rotation"],
        backbone="resnet18",
        stem="cifar",
        width=0.125,
        view_size=16,
        proj_dim=8,
        queue_size=32,
        view_overrides={"blur_p": 0.0},
    )
    tcfg = TrainConfig(batch_size=8, steps=2, run_dir=str(root / "run"), device="cpu", seed=1, method=mcfg)
    tcfg.checkpoint.every, tcfg.log.tensorboard, tcfg.log.progress, tcfg.knn.every_epochs = 2, False, False, 0
    torch.manual_seed(0)
    Trainer(tcfg, build_method(mcfg), train_set).fit()
    ctx = EvalContext(root / "run", _eval_config(str(world), representations=["model"]))
    results = run_evaluations(ctx, EVALS)
    return ctx, results


# ------------------------------------------------------------------------------------- representations
def test_every_space_has_its_rows_in_results_json(looc_run):
    ctx, results = looc_run
    assert ctx.representations == ["model", *SPACES]
    assert json.loads((ctx.run_dir / "results.json").read_text()) == results
    for name in EVALS:
        assert set(results[name]) == {"model", *SPACES}, name
    assert results["_meta"]["sensitivity"]["looc_layer"] == "hidden"
    for rep in ("model", *SPACES):
        sens = results["sensitivity"][rep]
        assert set(sens) == {"rotation", "colour_jitter", "colour", "light_colour", "texture"}
        assert sens["rotation"]["chance"] == 25.0 and sens["rotation"]["n_test"] % 4 == 0
        assert sens["colour_jitter"]["chance"] == 10.0 and sens["colour_jitter"]["n_test"] == 4 * 10
        assert all(0 <= p["knn_top1"] <= 100 for p in sens.values())
        fg = results["finegrained"][rep]
        assert fg["classes"] == 6 and set(fg["fewshot"]) == {"allway_2shot", "allway_5shot"}


def test_space_features_equal_looc_representations(looc_run):
    ctx, _ = looc_run
    model = load_looc(ctx.run_dir)
    ds = ctx.dataset("eval_test")
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    reps = model.representations(normalize(to_float(images)))
    for i, name in enumerate(["z0", "z_colour", "z_rotation"]):
        feats, labels = ctx.features(name, "eval_test")
        torch.testing.assert_close(feats, reps.z[i], rtol=1e-4, atol=1e-5)
        assert torch.equal(labels, ds.labels)
    torch.testing.assert_close(ctx.features("looc++", "eval_test")[0], reps.plus, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ctx.features("model", "eval_test")[0], reps.v, rtol=1e-4, atol=1e-5)
    # the corruption / rotation path (a forward through backbone and head) gives the same features
    torch.testing.assert_close(ctx.featurize("z_rotation")(to_float(images)), reps.z[2], rtol=1e-4, atol=1e-5)
    # other layer and V in LooC++, by option; aliases resolve to the same space
    cfg = _eval_config(ctx.cfg.world_preset, representations=["z2", "looc++"])
    cfg.looc.spaces, cfg.looc.layer, cfg.looc.with_v = False, "output", True
    other = EvalContext(ctx.run_dir, cfg)
    assert other.representations == ["z_rotation", "looc++"]
    out = model.representations(normalize(to_float(images)), layer="output", with_v=True)
    torch.testing.assert_close(other.features("z_rotation", "eval_test")[0], out.z[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(other.features("looc++", "eval_test")[0], out.plus, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="z_texture"):
        _ = EvalContext(
            ctx.run_dir, _eval_config(ctx.cfg.world_preset, representations=["z_texture"])
        ).representations


def test_bad_jitter_strengths_name_the_key(looc_run):
    from invarlab.eval.sensitivity import sensitivity

    ctx, _ = looc_run
    cfg = _eval_config(ctx.cfg.world_preset, representations=["model"])
    cfg.sensitivity.probes, cfg.sensitivity.jitter_strengths = ["colour_jitter"], [0.4, 0.4, 0.4]
    with pytest.raises(ConfigError, match=r"sensitivity\.jitter_strengths=\[0\.4, 0\.4, 0\.4\]"):
        sensitivity(EvalContext(ctx.run_dir, cfg), "model")


def test_knn_of_a_space_equals_the_function_on_the_heads_output(looc_run):
    ctx, results = looc_run
    model = load_looc(ctx.run_dir)
    xs = []
    for name in (ctx.cfg.classify_train, ctx.cfg.classify_test):
        ds = ctx.dataset(name)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        xs.append((model.representations(normalize(to_float(images))).z[1], ds.labels))
    (xtr, ytr), (xte, yte) = xs
    assert results["knn"]["z_colour"] == pytest.approx(knn_accuracy(xtr, ytr, xte, yte, 10, 0.1), abs=1e-6)


def test_feature_loader_reads_looc_heads(looc_run):
    ctx, _ = looc_run
    enc = encoder_from_checkpoint(ctx.run_dir)  # used to find no head: LooC saves heads.*, not head.*
    model = load_looc(ctx.run_dir)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(enc.head(enc.backbone(x)), model.heads[0](model.backbone(x)))


def test_a_non_looc_run_has_only_model_and_random(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        make_checkpoint(build_backbone("resnet18", stem="cifar", width=0.125)),
        run / "checkpoints" / "step_1.pt",
    )
    ctx = EvalContext(run, _eval_config("quickstart"))
    assert ctx.representations == ["model", "random"]
    assert "looc.spaces ignored" in caplog.text
    with pytest.raises(CheckpointError, match="not a LooC"):
        _ = EvalContext(run, EvalConfig(representations=["z0"])).representations


# ------------------------------------------------------------------------------------------ sensitivity
def _top_band_images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    x[:, :, :3] = 1.0  # a bright "sky": which way is up is visible
    return x


def _quadrants(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 2).flatten(1)


def test_rotation_probe_high_for_equivariant_chance_for_invariant_features():
    images = _top_band_images(40)
    sensitive = rotation_probe(_quadrants, images, seed=3)
    # averaging over the four quarter turns makes the features exactly invariant to them
    invariant = rotation_probe(
        lambda x: sum(_quadrants(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)) / 4, images, seed=3
    )
    assert sensitive["top1"] > 95 and sensitive["chance"] == 25.0
    assert invariant["top1"] == pytest.approx(25.0)
    assert sensitive["n_train"] + sensitive["n_test"] == 160 and sensitive["n_test"] == 40


def test_rotation_copies_are_counter_clockwise_quarter_turns():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    copies, turns, source = rotation_copies(x)
    assert turns.tolist() == [0, 1, 2, 3] * 2 and source.tolist() == [0] * 4 + [1] * 4
    for row in range(8):
        ref = np.rot90(x[source[row]].numpy(), int(turns[row]), axes=(1, 2))  # numpy: counter-clockwise
        assert np.array_equal(copies[row].numpy(), ref)
    # the top-left pixel of the image ends bottom-left after one counter-clockwise turn
    assert copies[1, 0, -1, 0] == x[0, 0, 0, 0]


def test_grouped_split_never_puts_a_group_on_both_sides():
    groups = torch.arange(30).repeat_interleave(4)[
        torch.randperm(120, generator=torch.Generator().manual_seed(1))
    ]
    for seed in range(20):
        tr, te = grouped_split(groups, 0.25, seed)
        assert len(tr) + len(te) == 120 and len(set(tr.tolist()) | set(te.tolist())) == 120
        assert not set(groups[tr].tolist()) & set(groups[te].tolist())
        assert len(set(groups[te].tolist())) == 8  # round(0.25 * 30) whole groups
    assert not torch.equal(grouped_split(groups, 0.25, 0)[1], grouped_split(groups, 0.25, 1)[1])


def test_rgb_to_hsv_matches_colorsys_and_dominant_hue_bins():
    g = torch.Generator().manual_seed(0)
    px = torch.rand(3, 7, 5, generator=g)
    h, s, v = rgb_to_hsv(px)
    for i in range(7):
        for j in range(5):
            ref = colorsys.rgb_to_hsv(*px[:, i, j].tolist())
            assert (h[i, j] / 360, s[i, j], v[i, j]) == pytest.approx(ref, abs=1e-5)
    # objects painted one colour on a grey background: the bin of their hue; grey -> achromatic; none -> -1
    hues = [0.0, 0.02, 0.97, 0.2, 0.5, 0.66]  # red, red, red (wraps), yellow-green, cyan, blue
    images = torch.full((len(hues) + 2, 3, 8, 8), 128, dtype=torch.uint8)
    masks = torch.zeros(len(hues) + 2, 8, 8, dtype=torch.bool)
    masks[:-1, 2:6, 2:6] = True
    for n, hue in enumerate(hues):
        rgb = torch.tensor(colorsys.hsv_to_rgb(hue, 0.8, 0.9)) * 255
        images[n, :, 2:6, 2:6] = rgb.round().to(torch.uint8).view(3, 1, 1)
    images[len(hues), :, 2:6, 2:6] = 200  # a grey object
    out = dominant_hue(images, masks, bins=6)
    assert out.tolist() == [0, 0, 0, 1, 3, 4, 6, -1]


def test_texture_family_against_the_instance_parts():
    cats = torch.tensor([0, 3, 7, 10, 13, 5])
    insts = torch.tensor([0, 1, 2, 0, 1, 2])
    fam = texture_family(cats, insts, torch.full((6,), -1), world_seed=0, instances_per_category=3)
    for c, i, f in zip(cats.tolist(), insts.tolist(), fam.tolist(), strict=True):
        kinds = {p.texture for p in build_instance(0, c, i)} - {"plain"}
        assert TEXTURE_KINDS[f] == (kinds.pop() if kinds else "plain")
    over = texture_family(cats, insts, torch.tensor([2, -1, 2, 2, 2, 2]), 0, 3)
    assert over[0] == 2 and over[1] == fam[1]


def test_world_targets_vary_on_the_probe_set(looc_run):
    ctx, results = looc_run
    model = results["sensitivity"]["model"]
    assert model["colour"]["num_values"] >= 3 and model["texture"]["num_values"] >= 2
    assert model["light_colour"]["num_values"] == 3
    ds: WorldDataset = ctx.dataset("probes")
    assert model["colour"]["n_train"] + model["colour"]["n_test"] <= len(ds)


# ---------------------------------------------------------------------------------------- fine-grained
def _jpeg(path: Path, colour: tuple[int, int, int], size=(20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


def _cub_fixture(root: Path) -> Path:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    lines, labels, split = [], [], []
    k = 0
    for c, name in enumerate(classes):
        for j in range(4):
            k += 1
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            _jpeg(base / "images" / rel, (60 * c, 100, 200 - 50 * c))
            lines.append(f"{k} {rel}")
            labels.append(f"{k} {c + 1}")
            split.append(f"{k} {int(j < 3)}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c + 1} {n}" for c, n in enumerate(classes)) + "\n")
    return root


def _flowers_fixture(root: Path) -> Path:
    from scipy.io import savemat

    labels = np.array([[1, 2, 3, 1, 2, 3, 1, 2, 3, 3]])
    for i in range(1, 11):
        _jpeg(root / "jpg" / f"image_{i:05d}.jpg", (25 * i, 80, 40), size=(16, 24))
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(
        root / "setid.mat",
        {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5, 6]]), "tstid": np.array([[7, 8, 9, 10]])},
    )
    return root


def test_cub_loader_reads_the_official_layout(tmp_path):
    _cub_fixture(tmp_path)
    train, test = cub200(tmp_path, "train", 8), cub200(tmp_path / "CUB_200_2011", "test", 8)
    assert len(train) == 9 and len(test) == 3
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.classes[1] == "002.Laysan_Albatross"
    image, label, index = test[2]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8) and (label, index) == (2, 2)
    assert abs(int(image[0, 4, 4]) - 120) <= 3  # class 3's red, through JPEG
    (tmp_path / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.jpg").unlink()
    with pytest.raises(DataError, match=r"Laysan_Albatross_0001\.jpg"):
        cub200(tmp_path, "train", 8)
    with pytest.raises(DataError, match=r"images\.txt"):
        cub200(tmp_path / "nowhere", "train", 8)


def test_flowers_loader_reads_the_mat_files(tmp_path):
    _flowers_fixture(tmp_path)
    assert flowers102(tmp_path, "train", 8).labels.tolist() == [0, 1, 2]
    both = flowers102(tmp_path, "train+val", 8)
    assert [p.name for p in both.paths] == [f"image_{i:05d}.jpg" for i in range(1, 7)]
    test = flowers102(tmp_path, "test", 8)
    assert test.labels.tolist() == [0, 1, 2, 2] and test.num_classes == 3
    image, _, _ = test[0]
    assert image.shape == (3, 8, 8) and abs(int(image[0, 4, 4]) - 175) <= 3
    (tmp_path / "setid.mat").unlink()
    with pytest.raises(DataError, match=r"setid\.mat"):
        flowers102(tmp_path, "test", 8)


def test_finegrained_scores_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 5
    ytr, yte = torch.arange(5).repeat(6), torch.arange(5).repeat(3)
    xtr = centres[ytr] + 0.1 * torch.randn(30, 8, generator=g)
    xte = centres[yte] + 0.1 * torch.randn(15, 8, generator=g)
    out = finegrained_scores(xtr, ytr, xte, yte, shots=(2, 7), trials=3, knn_k=5)
    assert out["linear"]["top1"] == 100 and out["knn"]["top1"] == 100
    assert set(out["fewshot"]) == {"allway_2shot"}  # 7 shots: no class has 7 training images
    assert out["fewshot"]["allway_2shot"]["mean"] == 100 and out["fewshot"]["allway_2shot"]["ways"] == 5


# ------------------------------------------------------------------------------------ CLI and report
def test_cli_finegrained_on_cub_and_sensitivity(looc_run, tmp_path, capsys):
    ctx, _ = looc_run
    _cub_fixture(tmp_path)
    world = ctx.cfg.world_preset
    args = ["finegrained", str(ctx.run_dir), f"world_preset={world}", "device=cpu", "looc.spaces=true"]
    args += ["representations=[model,random]"]
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *args, "finegrained.shots=[2]", "knn.k=3", "--dataset", "cub", "--root", str(tmp_path)])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    results = json.loads((ctx.run_dir / "results.json").read_text())
    assert set(results["finegrained_cub"]) == {"model", "random", *SPACES}
    assert results["finegrained_cub"]["looc++"]["n_test"] == 3
    assert results["_meta"]["finegrained_cub"]["dataset"] == "cub"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *args, "--dataset", "cub"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--root" in err and "Traceback" not in err
    sens = ["eval", "sensitivity", str(ctx.run_dir), f"world_preset={world}", "device=cpu"]
    sens += ["representations=[z2]", "sensitivity.probes=[rotation]", "sensitivity.rotation_images=8"]
    with pytest.raises(SystemExit) as exit_info:
        main(sens)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    results = json.loads((ctx.run_dir / "results.json").read_text())
    assert set(results["sensitivity"]["z_rotation"]) == {"rotation"}  # the alias z2, stored by its name
    assert results["_meta"]["sensitivity"]["rotation_images"] == 8


def test_report_shows_the_per_space_table_and_chart(looc_run, tmp_path):
    ctx, _ = looc_run
    html = write_report(ctx.run_dir).read_text()
    section = html[html.index('<section id="eval-looc">') :]
    section = section[: section.index("</section>")]
    for label in ("V (backbone)", "Z_0 (invariant)", "Z_colour (variant to colour)", "LooC++"):
        assert f'<td class="label">{label}</td>' in section, label
    for column in (
        "rotation probe",
        "colour transform probe",
        "object hue probe",
        "colour transform kNN",
        "texture probe",
        "kNN top-1",
        "few-shot",
        "fine-grained",
    ):
        assert column in section, column
    assert section.count("<img") == 1 and "Other: sensitivity" not in html
    # a run without sensitivity results has no such section
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "results.json").write_text(json.dumps({"knn": {"model": {"top1": 50.0}}}))
    assert 'id="eval-looc"' not in write_report(plain).read_text()


def test_p3_presets_run_the_looc_evaluations_and_the_world_has_the_finegrained_set():
    from invarlab.cli_eval import load_run_config
    from invarlab.config import load_config
    from invarlab.world.config import WorldPreset

    root = Path(__file__).resolve().parents[1] / "configs" / "p3"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_run_config([str(path)], None)
        assert {"sensitivity", "finegrained", "knn", "corruptions"} <= set(cfg.eval.evaluations), path.name
        assert cfg.eval.looc.spaces == path.stem.startswith("looc"), path.name
    spec = load_config(WorldPreset, "quickstart", [], group="world").datasets["finegrained"]
    assert spec.categories == ["mug", "mushroom"] and spec.split == "all" and spec.num_images >= 3000
