"""The report's combined sections: real-data invariance (``invariance_<dataset>``) in P1's layout and the
dense evaluations (``segment_retrieval``, ``label_propagation``, ``seg_probe`` and their ``_voc`` / ``_davis``
variants), in a run's report and side by side in a comparison; "not evaluated" hints whose commands the CLI
accepts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from invarlab.cli import main
from invarlab.report import compare_runs, write_report
from invarlab.report.combined import eval_commands, members, real_invariance_table, split_key
from invarlab.report.sections import eval_command
from invarlab.results import record_result
from test_report import Page

COUNTS = {"images": 120, "sets": 20, "scored_sets": 18, "classes": 4}
REAL = {
    "aloi": {
        "model": {
            "viewpoint": {"top10": 61.25, "top25": 48.5, **COUNTS},
            "illum_direction": {"top10": 70.75, "top25": 55.25, **COUNTS},
            "illum_color": {"top10": 80.5, "top25": 66.0, **COUNTS},
        },
        "random": {
            "viewpoint": {"top10": 31.5, "top25": 27.25, **COUNTS},
            "illum_direction": {"top10": 33.0, "top25": 28.0, **COUNTS},
            "illum_color": {"top10": 34.5, "top25": 29.75, **COUNTS},
        },
    },
    "got10k": {
        "model": {"occlusion": {"top10": 90.25, "top25": 77.75, "images": 50, "sets": 9}},
        "random": {"occlusion": {"top10": 35.25, "top25": 30.5, "images": 50, "sets": 9}},
    },
    "pascal3d": {
        "model": {
            "instance": {"top10": 44.5, "top25": 38.25},
            "instance_viewpoint": {"top10": 52.0, "top25": 41.5},
        },
        "random": {
            "instance": {"top10": 30.0, "top25": 26.5},
            "instance_viewpoint": {"top10": 32.75, "top25": 27.0},
        },
    },
}
DENSE = {
    "segment_retrieval": {
        "model": {"miou": 45.5, "iou": {"background": 80.0, "mug": 11.0}, "pixel_accuracy": 90.0},
        "random": {"miou": 20.25, "iou": {"background": 39.5, "mug": 1.0}, "pixel_accuracy": 50.0},
    },
    "segment_retrieval_voc": {
        "model": {"miou": 39.0, "miou_7cls": 48.0, "iou": {"cat": 60.0}, "bank_size": 3000},
        "random": {"miou": 5.5, "miou_7cls": 7.25, "iou": {"cat": 2.0}, "bank_size": 3000},
    },
    "label_propagation_davis": {
        "model": {
            "J&F-Mean": 63.2,
            "J-Mean": 60.5,
            "F-Mean": 65.9,
            "J-Recall": 70.0,
            "per_video": {"bear": 81.0},
        },
        "random": {
            "J&F-Mean": 30.0,
            "J-Mean": 28.0,
            "F-Mean": 32.0,
            "J-Recall": 20.0,
            "per_video": {"bear": 40.0},
        },
    },
    "seg_probe": {
        "model": {"miou": 52.75, "pixel_accuracy": 91.0},
        "random": {"miou": 12.5, "pixel_accuracy": 60.0},
    },
}


def make_run(path: Path, real=REAL, dense=DENSE) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("method:\n  name: moco\n")
    for dataset, reps in real.items():
        meta = {"dataset": dataset, "root": f"/data/{dataset}", "counts": {"viewpoint": COUNTS}}
        for rep, values in reps.items():
            record_result(path, f"invariance_{dataset}", rep, values, meta=meta)
    for key, reps in dense.items():
        for rep, values in reps.items():
            record_result(path, key, rep, values, meta={"dataset": split_key(key)[2]})
    return path


def test_keys_split_into_sections_in_column_order():
    assert split_key("invariance_aloi") == ("invariance_real", "invariance", "aloi")
    assert split_key("label_propagation_davis") == ("dense", "label_propagation", "davis")
    assert split_key("seg_probe") == ("dense", "seg_probe", "world")
    assert [split_key(k) for k in ("invariance", "knn", "segment", "invariance_real")] == [None] * 4
    keys = ["seg_probe", "invariance_pascal3d", "segment_retrieval_voc", "invariance_aloi", "knn"]
    keys += ["label_propagation", "invariance_got10k", "segment_retrieval"]
    assert members("invariance_real", keys) == ["invariance_got10k", "invariance_aloi", "invariance_pascal3d"]
    assert members("dense", keys) == [
        "segment_retrieval",
        "segment_retrieval_voc",
        "label_propagation",
        "seg_probe",
    ]


def test_a_factor_measured_on_two_datasets_gets_two_columns():
    other = {"model": {"occlusion": {"top10": 12.0, "top25": 10.5}, "blur": {"top10": 1.0, "top25": 2.0}}}
    table = real_invariance_table({"invariance_got10k": REAL["got10k"], "invariance_mine": other})
    assert [g for g, _ in table.groups] == ["Occlusion", "Occlusion (mine)", "blur (mine)"]
    assert table.rows == [
        ("model", ["90.25", "77.75", "12.00", "10.50", "1.00", "2.00"]),
        ("random", ["35.25", "30.50", "—", "—", "—", "—"]),
    ]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "run")
    return Page(write_report(run).read_text())


def test_real_invariance_in_p1_layout_with_the_sets_of_each_dataset(page):
    assert page.errors == [] and page.stack == []
    assert page.sections["eval-invariance_real"]["title"] == "Invariance on real data (Top-K RIS)"
    table = page.sections["eval-invariance_real"]["tables"][0]
    assert table[0] == [
        "representation",
        "Occlusion",
        "Viewpoint",
        "Illum. dir",
        "Illum. color",
        "Instance",
        "Instance+Viewpoint",
    ]
    assert table[1] == ["Top-10", "Top-25"] * 6
    order = (
        ("got10k", "occlusion"),
        ("aloi", "viewpoint"),
        ("aloi", "illum_direction"),
        ("aloi", "illum_color"),
        ("pascal3d", "instance"),
        ("pascal3d", "instance_viewpoint"),
    )
    for rep, label in (("model", "model"), ("random", "random (floor)")):
        expected = [f"{REAL[d][rep][f][k]:.2f}" for d, f in order for k in ("top10", "top25")]
        assert page.row("eval-invariance_real", label) == expected
    assert [r[0] for r in table[2:]] == ["model", "random (floor)"]
    # The set counts, per set kind; a kind that stores none shows dashes.
    assert page.row("eval-invariance_real", "Viewpoint (ALOI)", table=1) == ["120", "20", "18", "4"]
    assert page.row("eval-invariance_real", "Occlusion (GOT-10k)", table=1) == ["50", "9", "—", "—"]
    assert page.row("eval-invariance_real", "Instance (Pascal3D+)", table=1) == ["—"] * 4
    text = page.text("eval-invariance_real")
    assert "root = /data/aloi" in text and "counts" not in text and "not evaluated" not in text
    # Not shown again under "Other", and the world's own section is untouched (not evaluated here).
    assert not any(s.startswith("eval-invariance_") and s != "eval-invariance_real" for s in page.sections)
    assert "not evaluated" in page.text("eval-invariance")


def test_dense_table_has_a_column_group_per_key_with_model_and_floor(page):
    table = page.sections["eval-dense"]["tables"][0]
    assert table[0] == [
        "representation",
        "Segment retrieval (mIoU)",
        "Label propagation",
        "Seg. probe (mIoU)",
    ]
    assert table[1] == ["world", "VOC", "VOC 7cls", "DAVIS J&F", "DAVIS J", "DAVIS F", "world"]
    assert page.row("eval-dense", "model") == ["45.50", "39.00", "48.00", "63.20", "60.50", "65.90", "52.75"]
    assert page.row("eval-dense", "random (floor)") == [
        "20.25",
        "5.50",
        "7.25",
        "30.00",
        "28.00",
        "32.00",
        "12.50",
    ]
    assert [r[0] for r in table[2:]] == ["model", "random (floor)"]
    # Every stored number in the collapsible tables: per-class IoU, recall, per-video J&F.
    tables = page.sections["eval-dense"]["tables"]
    retrieval = tables[1]
    assert retrieval[0] == ["representation", "miou", "iou/background", "iou/mug", "pixel_accuracy"]
    assert page.row("eval-dense", "model", table=1) == ["45.50", "80.00", "11.00", "90.00"]
    davis = tables[3]
    assert "J-Recall" in davis[0] and "per_video/bear" in davis[0]
    assert page.row("eval-dense", "random (floor)", table=3)[davis[0].index("per_video/bear") - 1] == "40.00"
    text = page.text("eval-dense")
    assert "evaluation = segment_retrieval_voc · dataset = voc" in text
    assert "not evaluated" not in text
    assert not any(k in page.sections for k in ("eval-seg_probe", "eval-segment_retrieval_voc"))


def test_not_evaluated_hints_give_commands_the_cli_accepts(tmp_path, capsys):
    run = make_run(tmp_path / "bare run", real={}, dense={})
    record_result(run, "knn", "model", {"top1": 1.0})
    page = Page(write_report(run).read_text())
    real = page.text("eval-invariance_real")
    dense = page.text("eval-dense")
    assert "not evaluated" in real and "not evaluated" in dense
    for dataset in ("got10k", "aloi", "pascal3d"):
        assert f"invarlab eval invariance '{run}' --dataset {dataset} --root PATH" in real
    for name, dataset in (("segment-retrieval", "voc"), ("label-propagation", "davis"), ("seg-probe", "voc")):
        assert f"invarlab eval {name} '{run}'" in dense
        assert f"invarlab eval {name} '{run}' --dataset {dataset} --root PATH" in dense
    assert "-voc" not in dense and "-davis" not in dense
    # Every hinted command parses: sub-command and options exist (--help stops before anything runs).
    commands = [
        c
        for k in ("invariance_aloi", "segment_retrieval_voc", "label_propagation_davis", "seg_probe")
        for c in eval_commands(k, [tmp_path])
    ]
    for line in commands:
        argv = line.split()[1:]
        with pytest.raises(SystemExit) as info:
            main([*argv, "--help"])
        assert (info.value.code or 0) == 0, line
    # The old spelling of a variant key is not a command (the oracle above can fail).
    with pytest.raises(SystemExit) as info:
        main(["eval", "segment-retrieval-voc", str(tmp_path), "--help"])
    assert info.value.code == 2
    capsys.readouterr()


def test_eval_command_of_plain_and_variant_keys(tmp_path):
    assert eval_command("factor_probes", [tmp_path]) == f"invarlab eval factor-probes {tmp_path}"
    assert eval_command("seg_probe_voc", [tmp_path]) == (
        f"invarlab eval seg-probe {tmp_path} --dataset voc --root PATH"
    )
    assert eval_command("invariance_got10k", [tmp_path, tmp_path]) == "; ".join(
        [f"invarlab eval invariance {tmp_path} --dataset got10k --root PATH"] * 2
    )


def test_partial_results_hint_only_what_is_missing(tmp_path):
    run = make_run(tmp_path / "r", real={"aloi": REAL["aloi"]}, dense={"seg_probe": DENSE["seg_probe"]})
    page = Page(write_report(run).read_text())
    real = page.text("eval-invariance_real")
    assert "not evaluated yet" in real and "--dataset aloi" not in real
    assert "--dataset got10k" in real and "--dataset pascal3d" in real
    assert page.sections["eval-invariance_real"]["tables"][0][0][1:] == [
        "Viewpoint",
        "Illum. dir",
        "Illum. color",
    ]
    assert [r[0] for r in page.sections["eval-invariance_real"]["tables"][1][1:]] == [
        "Viewpoint (ALOI)",
        "Illum. dir (ALOI)",
        "Illum. color (ALOI)",
    ]
    dense = page.text("eval-dense")
    assert "invarlab eval seg-probe" not in dense
    assert f"invarlab eval label-propagation {run} --dataset davis --root PATH" in dense


def test_compare_puts_runs_side_by_side(tmp_path):
    a = make_run(tmp_path / "a")
    b_dense = {"label_propagation_davis": {"model": {"J&F-Mean": 66.25, "J-Mean": 64.0, "F-Mean": 68.5}}}
    b = make_run(
        tmp_path / "b",
        real={"got10k": {"model": {"occlusion": {"top10": 95.5, "top25": 81.0}}}},
        dense=b_dense,
    )
    page = Page(compare_runs([a, b], tmp_path / "cmp.html").read_text())
    assert page.errors == []
    real = page.sections["eval-invariance_real"]["tables"][0]
    assert real[0][0] == "run" and [r[0] for r in real[2:]] == ["a", "b", "random floor (a)"]
    assert page.row("eval-invariance_real", "a")[:2] == ["90.25", "77.75"]
    assert page.row("eval-invariance_real", "b") == ["95.50", "81.00"] + ["—"] * 10
    assert page.row("eval-invariance_real", "random floor (a)")[:2] == ["35.25", "30.50"]
    dense = page.sections["eval-dense"]["tables"][0]
    assert dense[0][0] == "run" and [r[0] for r in dense[2:]] == ["a", "b", "random floor (a)"]
    assert page.row("eval-dense", "a")[3:6] == ["63.20", "60.50", "65.90"]
    assert page.row("eval-dense", "b") == ["—", "—", "—", "66.25", "64.00", "68.50", "—"]
    assert page.row("eval-dense", "random floor (a)")[0] == "20.25"
    # Settings the runs share are one line; no member key shows up again under "Other".
    assert "evaluation = invariance_got10k · dataset = got10k · root = /data/got10k" in page.text(
        "eval-invariance_real"
    )
    assert "Other" not in " ".join(s["title"] for s in page.sections.values())
