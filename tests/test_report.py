"""The HTML report: every section from a stored run, offline, valid markup, escaped text, embedded PNGs,
"not evaluated" hints, comparisons, the CLI, and (where Chromium is installed) a real browser's rendering.

The page is read back with ``html.parser`` into sections, tables (cell text grids) and image sources, so
the tests check what a reader sees: the number in the cell under the right header, not a substring that
could come from anywhere.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import socket
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import invarlab
from invarlab.cli import main
from invarlab.report import compare_runs, plots, write_report
from invarlab.report.tables import corruption_rows, corruption_severities, fewshot_table, fmt, probe_table
from invarlab.results import record_result

ROOT = Path(__file__).resolve().parents[1]
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}
SCRIPT = "<script>alert(1)</script>"
INVARIANCE = {
    "model": {
        "viewpoint": {"top10": 61.25, "top25": 48.5},
        "illum_direction": {"top10": 70.75, "top25": 55.25},
        "illum_color": {"top10": 80.5, "top25": 66.0},
        "occlusion": {"top10": 90.25, "top25": 77.75},
        "instance": {"top10": 44.5, "top25": 38.25},
        "instance_viewpoint": {"top10": 52.0, "top25": 41.5},
    },
    "random": {
        "viewpoint": {"top10": 31.5, "top25": 27.25},
        "illum_direction": {"top10": 33.0, "top25": 28.0},
        "illum_color": {"top10": 34.5, "top25": 29.75},
        "occlusion": {"top10": 35.25, "top25": 30.5},
        "instance": {"top10": 30.0, "top25": 26.5},
        "instance_viewpoint": {"top10": 32.75, "top25": 27.0},
    },
}
PROBES = {
    "model": {"azimuth": {"top1": 72.5, "chance": 12.5}, "category": {"accuracy": 95.75, "chance": 25.0}},
    "random": {"azimuth": {"top1": 40.25, "chance": 12.5}, "category": {"accuracy": 51.5, "chance": 25.0}},
}
KNN = {"model": {"top1": 63.75, "top5": 91.25}, "random": {"top1": 21.5, "top5": 55.0}}
LINEAR = {"model": {"top1": 68.5, "top5": 93.0, "weight_decay": 0.0001, "val_top1": {"0.0001": 60.0}}}
FEWSHOT = {"model": {"5way_5shot": {"mean": 71.25, "ci95": 0.75}, "5way_1shot": {"mean": 50.5, "ci95": 1.25}}}
SVM = {"model": {"map": 57.25, "per_class": {"mug": 60.5, "car": 54.0}}}
# One entry per real invariance dataset and dense evaluation, so that every section of the page is filled
# (tests/test_report_sections.py checks those sections' numbers).
REAL_DENSE = {
    "invariance_got10k": {"occlusion": {"top10": 88.5, "top25": 71.25}},
    "invariance_aloi": {"viewpoint": {"top10": 58.0, "top25": 45.5}},
    "invariance_pascal3d": {"instance": {"top10": 40.0, "top25": 35.0}},
    "segment_retrieval": {"miou": 33.5},
    "label_propagation": {"J&F-Mean": 60.5, "J-Mean": 58.0, "F-Mean": 63.0},
    "seg_probe": {"miou": 41.0},
}
CORRUPTIONS = {
    "model": {
        "clean": 0.875,
        "mean": 0.625,
        "per_corruption": {
            "fog": [0.8, 0.7, 0.6, 0.5, 0.4],
            "gaussian_noise": {"accuracy": [0.9, 0.8, 0.7, 0.6, 0.5]},
        },
    }
}


def tiny_png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def make_run(path: Path, *, results: bool = True, lr: float = 0.1, config_extra: str = "") -> Path:
    """A stored run: config.yaml, metrics.jsonl (with a torn last line), results.json via record_result,
    and figures/."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(
        f"method:\n  name: moco\n  backbone: resnet18\n  width: 0.25\noptim:\n  base_lr: {lr}\n{config_extra}"
    )
    lines = [
        {
            "step": s,
            "epoch": s // 20,
            "time": s * 0.5,
            "train/loss": 5.0 - s / 50,
            "train/lr": lr,
            "train/img_per_s": 100.0,
        }
        for s in (10, 20, 30, 40)
    ]
    monitor = {"epoch": 0, "time": 0.5, "knn/top1": 26.25, "knn/chance": 25.0}  # knn.at_start's step 0
    lines.insert(0, {"step": 0, **monitor})
    lines.append({"step": 40, "epoch": 1, "time": 21.0, "knn/top1": 37.5, "knn/chance": 25.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 5')
    if results:
        for evaluation, reps in (
            ("invariance", INVARIANCE),
            ("factor_probes", PROBES),
            ("knn", KNN),
            ("linear", LINEAR),
            ("fewshot", FEWSHOT),
            ("svm", SVM),
            ("corruptions", CORRUPTIONS),
        ):
            for rep, values in reps.items():
                record_result(path, evaluation, rep, values, meta={"dataset": "world", "k": 200})
        for evaluation, values in REAL_DENSE.items():
            record_result(path, evaluation, "model", values)
        record_result(path, "my_eval", "model", {"miou": 33.25, "per_k": {"1": 30.5}})
        retrieval = {"precision_at_5": 70.25, "precision_at_1": 80.5, "figure": "figures/retrieval.png"}
        record_result(path, "retrieval", "model", retrieval, meta={"neighbours": 5})
        (path / "figures").mkdir()
        (path / "figures" / "retrieval.png").write_bytes(tiny_png())
        (path / "figures" / "extra.png").write_bytes(tiny_png((10, 120, 10)))
    return path


class Page(HTMLParser):
    """Sections (by id) with their h2, tables (rows of cell texts), image sources, links; tag balance."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.sections: dict[str, dict] = {}
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self._section: str | None = None
        self._cell: list[str] | None = None
        self._h2: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = {"title": "", "tables": [], "text": []}
        elif tag == "table" and self._section:
            self.sections[self._section]["tables"].append([])
        elif tag == "tr" and self._section:
            self.sections[self._section]["tables"][-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._h2 = []
        elif tag == "img":
            self.imgs.append(attrs["src"])
        elif tag == "a":
            self.hrefs.append(attrs.get("href", ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.sections[self._section]["tables"][-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._h2 is not None:
            self.sections[self._section]["title"] = "".join(self._h2)
            self._h2 = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        for buf in (self._cell, self._h2):
            if buf is not None:
                buf.append(data)
        if self._section:
            self.sections[self._section]["text"].append(data)

    def text(self, section: str) -> str:
        return " ".join(self.sections[section]["text"])

    def row(self, section: str, label: str, table: int = 0) -> list[str]:
        rows = [r for r in self.sections[section]["tables"][table] if r and r[0] == label]
        assert len(rows) == 1, (section, label, self.sections[section]["tables"][table])
        return rows[0][1:]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A full stored run and its report, rendered with every network connection refused."""
    run = make_run(tmp_path_factory.mktemp("runs") / "run_a", config_extra=f"note: '{SCRIPT}'\n")
    record_result(run, "knn", "z<b>0", {"top1": 50.0, "top5": 80.0})  # a representation name to escape
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a report")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        out = write_report(run)
    assert attempts == []
    return run, out, out.read_text()


def test_report_is_written_into_the_run_and_has_every_section(stored):
    run, out, text = stored
    assert out == run / "report.html"
    page = Page(text)
    titles = {sid: s["title"] for sid, s in page.sections.items()}
    assert titles == {
        "config": "Config",
        "training": "Training curves",
        "eval-invariance": "Invariance (Top-K RIS)",
        "eval-factor_probes": "Factor probes",
        "eval-knn": "kNN classification",
        "eval-linear": "Linear probe",
        "eval-fewshot": "Few-shot classification",
        "eval-svm": "Linear SVM",
        "eval-corruptions": "Corruption robustness",
        "eval-invariance_real": "Invariance on real data (Top-K RIS)",
        "eval-dense": "Dense evaluations",
        "eval-my_eval": "Other: my_eval",
        "retrieval": "Nearest-neighbour retrieval",
        "figures": "Other figures",
    }
    assert "not evaluated" not in text
    assert f"generated by invarlab {invarlab.__version__} on " in text  # footer


def test_invariance_table_has_p1_layout_with_the_stored_numbers(stored):
    page = Page(stored[2])
    table = page.sections["eval-invariance"]["tables"][0]
    # Header: factors in P1's order, each over a Top-10 and a Top-25 column.
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
    order = ("occlusion", "viewpoint", "illum_direction", "illum_color", "instance", "instance_viewpoint")
    for rep, label in (("model", "model"), ("random", "random (floor)")):
        expected = [f"{INVARIANCE[rep][f][k]:.2f}" for f in order for k in ("top10", "top25")]
        assert page.row("eval-invariance", label) == expected
    assert [r[0] for r in table[2:]] == ["model", "random (floor)"]  # the floor last


def test_downstream_tables_hold_the_stored_numbers(stored):
    page = Page(stored[2])
    assert page.row("eval-knn", "model") == ["63.75", "91.25"]
    assert page.row("eval-knn", "random (floor)") == ["21.50", "55.00"]
    assert page.row("eval-knn", "z<b>0") == ["50.00", "80.00"]  # escaped on the page, text again when parsed
    assert page.sections["eval-linear"]["tables"][0][0] == ["representation", "top1", "top5", "weight_decay"]
    assert page.row("eval-linear", "model") == ["68.50", "93.00", "0.0001"]
    assert page.sections["eval-fewshot"]["tables"][0][0] == ["representation", "5way 1shot", "5way 5shot"]
    assert page.row("eval-fewshot", "model") == ["50.50 ± 1.25", "71.25 ± 0.75"]
    assert page.sections["eval-svm"]["tables"][0][0] == ["representation", "map", "car", "mug"]
    assert page.row("eval-svm", "model") == ["57.25", "54.00", "60.50"]
    assert page.row("eval-corruptions", "model") == ["0.875", "0.625"]
    # Per corruption: mean over severities, from both stored forms (a list, or {"accuracy": [...]}).
    assert page.row("eval-corruptions", "fog", table=1) == ["0.600"]
    assert page.row("eval-corruptions", "gaussian_noise", table=1) == ["0.700"]
    assert page.row("eval-my_eval", "model") == ["33.25", "30.50"]
    # Retrieval precision with the grid, not as an "Other" evaluation; the figure's file name is not a column.
    assert page.sections["retrieval"]["tables"][0][0] == [
        "representation",
        "precision_at_1",
        "precision_at_5",
    ]
    assert page.row("retrieval", "model") == ["80.50", "70.25"]
    assert "settings: neighbours = 5" in page.text("retrieval")
    probes = page.sections["eval-factor_probes"]["tables"][0]
    assert probes[0] == ["representation", "Azimuth", "Category"]
    assert page.row("eval-factor_probes", "model") == ["72.50", "95.75"]  # "top1" and "accuracy" keys
    assert page.row("eval-factor_probes", "chance") == ["12.50", "25.00"]
    assert "settings: dataset = world · k = 200" in page.text("eval-knn")


def test_header_and_training_summary(stored):
    page = Page(stored[2])
    assert "invarlab report: run_a" in stored[2]
    assert "resnet18 ×0.25" in stored[2]
    training = page.text("training")
    assert "steps = 40" in training and "final loss = 4.20" in training and "kNN monitor = 37.50" in training
    assert "online kNN monitor (dashed: random-init floor, chance)" in training


def test_images_are_embedded_pngs_and_nothing_is_loaded_from_elsewhere(stored):
    run, _, text = stored
    page = Page(text)
    assert len(page.imgs) >= 8  # curves, extras, invariance bars + radar, probes, corruptions, 2 figures
    decoded = []
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            assert image.format == "PNG"
        decoded.append(data)
    assert (run / "figures" / "retrieval.png").read_bytes() in decoded
    assert (run / "figures" / "extra.png").read_bytes() in decoded
    # The 12 x 8 figures are shown 4x enlarged (at most), pixels kept sharp.
    assert text.count('width="48" height="32" class="pixelated"') == 2
    assert all(h.startswith("#") and h[1:] in page.sections for h in page.hrefs)
    assert page.counts.get("script", 0) == 0 and page.counts.get("link", 0) == 0
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_markup_is_balanced(stored):
    page = Page(stored[2])
    assert page.errors == [] and page.stack == []
    for tag in ("html", "head", "body", "main", "header", "footer", "style", "title"):
        assert page.counts.get(tag) == 1, tag
    assert stored[2].startswith("<!DOCTYPE html>")


def test_strings_from_files_are_escaped(stored):
    text = stored[2]
    assert SCRIPT not in text and "<b>0" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the config value, shown as text
    assert "z&lt;b&gt;0" in text


def test_missing_sections_say_not_evaluated_with_the_command(tmp_path):
    run = make_run(tmp_path / "bare run", results=False)
    page = Page(write_report(run).read_text())
    for evaluation in ("invariance", "factor_probes", "knn", "linear", "fewshot", "svm", "corruptions"):
        text = page.text(f"eval-{evaluation}")
        assert "not evaluated" in text
        # The eval sub-commands are hyphenated; the folder is quoted (its name has a space).
        assert f"invarlab eval {evaluation.replace('_', '-')} '{run}'" in text
    assert f"invarlab eval retrieval '{run}'" in page.text("retrieval")
    assert "figures" not in page.sections and page.errors == []


def test_a_folder_with_only_results_still_renders(tmp_path):
    run = tmp_path / "r"
    record_result(run, "knn", "model", {"top1": "nan", "top5": 12.0})
    page = Page(write_report(run, tmp_path / "out" / "page.html").read_text())
    assert page.row("eval-knn", "model") == ["nan", "12.00"]
    assert "no config.yaml" in page.text("config") and "no training log" in page.text("training")


def test_compare_has_a_row_per_run_and_the_first_runs_floor(tmp_path):
    a = make_run(tmp_path / "a" / "run", lr=0.1)
    b = make_run(tmp_path / "b" / "run", results=False, lr=0.5)
    record_result(b, "knn", "model", {"top1": 70.25, "top5": 95.5})
    record_result(b, "knn", "random", {"top1": 1.0, "top5": 2.0})  # only the first run's floor is shown
    out = compare_runs([a, b], tmp_path / "cmp.html")
    page = Page(out.read_text())
    assert page.errors == []
    # Same folder names: the parent disambiguates.
    assert page.row("eval-knn", "a/run") == ["63.75", "91.25"]
    assert page.row("eval-knn", "b/run") == ["70.25", "95.50"]
    assert page.row("eval-knn", "random floor (a/run)") == ["21.50", "55.00"]
    assert page.sections["eval-knn"]["tables"][0][0][0] == "run"
    assert page.row("eval-invariance", "b/run") == ["—"] * 12  # b has no invariance results
    assert page.row("eval-invariance", "a/run")[1] == "77.75"
    # The config keys that differ (run_dir aside) and the differing settings.
    assert page.row("config", "a/run") == ["0.100"] and page.row("config", "b/run") == ["0.500"]
    assert "a/run" in page.text("training") and "b/run" in page.text("training")
    assert page.row("retrieval", "a/run") == ["80.50", "70.25"] and page.row("retrieval", "b/run") == [
        "—",
        "—",
    ]


def test_cli_report_and_compare(tmp_path, capsys):
    a = make_run(tmp_path / "a", results=False)
    b = make_run(tmp_path / "b", results=False)
    with pytest.raises(SystemExit) as info:
        main(["report", str(a), "--out", str(tmp_path / "r.html")])
    assert (info.value.code or 0) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'r.html'}"
    with pytest.raises(SystemExit) as info:
        main(["compare", str(a), str(b), "-o", str(tmp_path / "c.html")])
    assert (info.value.code or 0) == 0 and (tmp_path / "c.html").is_file()
    assert capsys.readouterr().out.strip() == f"comparison: {tmp_path / 'c.html'}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "{tmp}/absent"], "absent: no such run folder"),
        (["report", "{tmp}/empty"], "not a run folder"),
        (["report", "{tmp}/corrupt"], "results.json: not valid JSON"),
        (["compare", "{tmp}/corrupt"], "at least two run directories"),
        (["compare", "{tmp}/empty", "{tmp}/corrupt"], "not a run folder"),
        (["report", "{tmp}/corrupt2", "--out", "{tmp}/file.txt/x.html"], "cannot write the report"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.json").write_text("{not json")
    (tmp_path / "corrupt2").mkdir()
    (tmp_path / "corrupt2" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as info:
        main([a.format(tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) <= 2


# ------------------------------------------------------------------------------------------- pieces
def test_fmt_and_table_helpers():
    assert [fmt(v) for v in (3, 61.25, 0.5, 0.0001, 0.0, None, "nan", True)] == [
        "3",
        "61.25",
        "0.500",
        "0.0001",
        "0.00",
        "—",
        "nan",
        "true",
    ]
    curves = corruption_rows({"per_corruption": {"a": [0.5, "nan"], "b": {"accuracy": [1, 2]}, "c": 3}})
    assert set(curves) == {"a", "b"} and curves["b"] == [1.0, 2.0]  # "c" has no curve: skipped
    assert curves["a"][0] == 0.5 and math.isnan(curves["a"][1])
    # Curves are drawn at the severities the run evaluated, not at positions 1..n.
    assert corruption_severities({"severities": [1, 3, 5]}, 3) == [1, 3, 5]
    assert corruption_severities({"severities": [1, 3, 5]}, 2) == [1, 2]  # does not fit the curve: positions
    assert corruption_severities(None, 5) == [1, 2, 3, 4, 5]
    table = fewshot_table(
        {"m": {"10way_1shot": {"mean": 1.5}, "5way_5shot": {"mean": 2.0, "ci95": 0.5}, "5way_1shot": 3}}
    )
    assert table.columns == ["5way 1shot", "5way 5shot", "10way 1shot"]  # numeric, not string, order
    assert table.rows == [("m", ["3", "2.00 ± 0.50", "1.50"])]
    probes = probe_table({"model": {"azimuth": {"top1": 50.0, "chance": 12.5}}, "random (floor)": None})
    assert probes.rows == [("model", ["50.00"]), ("random (floor)", ["—"]), ("chance", ["12.50"])]
    assert probes.floor_rows == {"random (floor)", "chance"}


def test_plots_are_pngs_at_page_width_or_none_when_empty():
    rows = {"model": INVARIANCE["model"], "random (floor)": INVARIANCE["random"]}
    png = plots.invariance_bars(rows)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width == int(plots.WIDTH * 100)
    assert plots.invariance_radar({"m": {"viewpoint": {"top25": 1.0}}}) is None  # fewer than 3 factors
    assert plots.invariance_bars({}) is None and plots.probe_bars({"m": None}) is None
    assert plots.training_curves({"r": [{"step": 1}]}) is None
    assert plots.corruption_curves({"m": {"clean": 0.9}}) is None
    assert plots.summary_bars({"kNN": {"a": None, "b": "text"}}) is None


def _monitor_axes(fig):
    return next(ax for ax in fig.axes if ax.get_title() == "kNN monitor top-1")


def test_monitor_curve_has_its_step_0_point_markers_and_the_floor_and_chance_lines():
    records = [
        {"step": 0, "epoch": 0, "knn/top1": 26.25, "knn/chance": 25.0},
        {"step": 10, "epoch": 0, "train/loss": 4.5, "train/lr": 0.1},
        {"step": 20, "epoch": 1, "train/loss": 4.0, "train/lr": 0.1, "knn/top1": 40.5, "knn/chance": 25.0},
    ]
    assert plots.monitor_chance(records) == 25.0 and plots.monitor_chance(records[1:2]) is None
    fig = plots.training_figure({"run": records}, floor=21.5, chance=plots.monitor_chance(records))
    ax = _monitor_axes(fig)
    curve = next(line for line in ax.lines if line.get_label() == "run")
    assert list(curve.get_xdata()) == [0, 20] and list(curve.get_ydata()) == [26.25, 40.5]
    assert curve.get_marker() == "o"
    refs = {line.get_label(): line for line in ax.lines if line is not curve}
    assert set(refs) == {"random init (floor) 21.50%", "chance 25.00%"}
    assert all(line.get_linestyle() == "--" for line in refs.values())
    assert list(refs["random init (floor) 21.50%"].get_ydata()) == [21.5, 21.5]
    assert list(refs["chance 25.00%"].get_ydata()) == [25.0, 25.0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["random init (floor) 21.50%", "chance 25.00%"]
    assert ax.get_xlim()[0] < 0  # the step-0 point is not cut by the axis
    assert plots.training_curves({"run": records}, 21.5, 25.0).startswith(b"\x89PNG")


def test_monitor_curve_draws_only_the_known_reference_lines():
    records = [{"step": 0, "knn/top1": 26.25}, {"step": 20, "knn/top1": 40.5}]
    ax = _monitor_axes(plots.training_figure({"run": records}, chance=25.0))
    assert [line.get_label() for line in ax.lines] == ["run", "chance 25.00%"]
    ax = _monitor_axes(plots.training_figure({"run": records}))
    assert [line.get_label() for line in ax.lines] == ["run"] and ax.get_legend() is None


# ------------------------------------------------------------------------------------------- browser
def _screenshot_script():
    spec = importlib.util.spec_from_file_location(
        "report_screenshot", ROOT / "scripts" / "report_screenshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("report_screenshot", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_report_renders_in_headless_chromium(stored, tmp_path):
    shot = _screenshot_script()
    if shot.find_chromium() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); docs/report.md has the manual check")
    png = shot.screenshot(stored[1], tmp_path / "shot.png", width=1280, height=2400)
    with Image.open(png) as image:
        gray = np.asarray(image.convert("L"))
        assert image.size == (1280, 2400)
    # Not a blank or error page: the header's dark text and the charts give many distinct shades.
    assert len(np.unique(gray)) > 40
    assert gray[:120].min() < 80  # the dark h1 is drawn near the top
