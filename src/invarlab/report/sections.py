"""The report's sections as markup: evaluations (shared by the single-run report and the comparison),
training curves, config and figures.

An evaluation section is drawn from ``rows`` (``{row label: metrics}``, see :mod:`invarlab.report.tables`);
an evaluation nobody ran becomes a "not evaluated" note with the command that produces it.
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from invarlab.eval.classify_config import CLASSIFY_DATASETS, CLASSIFY_EVALUATIONS
from invarlab.report import combined, markup, plots
from invarlab.report import tables as tb
from invarlab.report.run import RunData, flatten, is_finite, number

__all__ = [
    "EVALUATIONS",
    "classify_keys",
    "classify_split",
    "command",
    "eval_command",
    "evaluation_sections",
    "figure_sections",
    "training_section",
]

# Known evaluations in page order: (results.json key, title, what the numbers mean).
EVALUATIONS = (
    (
        "invariance",
        "Invariance (Top-K RIS)",
        "P1's Top-K Representation Invariance Score per factor (higher = more invariant; 100 = every set fires "
        "all-or-none). The random floor is the same architecture at initialisation.",
    ),
    (
        combined.REAL,
        "Invariance on real data (Top-K RIS)",
        "The same score on P1's real sets (PAPERS.md §1.4): occlusion on GOT-10k, viewpoint and illumination "
        "on ALOI, instance and instance+viewpoint on Pascal3D+ (invarlab eval invariance --dataset).",
    ),
    (
        "factor_probes",
        "Factor probes",
        "Linear-probe accuracy at decoding each factor of variation from the features (higher = the factor is "
        "still readable, i.e. less invariant); chance is the majority value's share of the test split.",
    ),
    ("knn", "kNN classification", "Weighted kNN on cosine similarity, top-1 / top-5 accuracy."),
    (
        "linear",
        "Linear probe",
        "Multinomial logistic regression on frozen features; weight decay chosen on validation.",
    ),
    (
        "linear_sgd",
        "Linear evaluation (standard protocol)",
        "A linear classifier trained by SGD on the frozen backbone with random crops and flips (MoCo's lincls).",
    ),
    ("fewshot", "Few-shot classification", "N-way K-shot episodes: mean accuracy ± 95% confidence interval."),
    ("svm", "Linear SVM", "Per-class linear SVMs (VOC07 protocol): mean average precision and AP per class."),
    (
        "corruptions",
        "Corruption robustness",
        "Accuracy on clean images and under each corruption, by severity (1 mildest, 5 strongest; 0 = clean).",
    ),
    (
        combined.DENSE,
        "Dense evaluations",
        "Frozen dense features without finetuning: segment retrieval and the segmentation probe (mIoU, %), "
        "label propagation (DAVIS J&F, J = region IoU, F = boundary F-measure, %); world, VOC or DAVIS.",
    ),
)
# "retrieval" is shown with its grid (figure_sections), not as an "Other" evaluation.
KNOWN = {key for key, _, _ in EVALUATIONS} | {"retrieval"}
# Evaluations run only when asked for: their section appears only when they have results.
OPTIONAL = ("linear_sgd",)
# Sections that only the world can fill (its factors, sets and scenes).
WORLD_ONLY = ("invariance", "factor_probes", "svm")


# The real datasets each of these evaluations can read besides the world (results.json: <evaluation>_<dataset>).
ON_DISK = {**{e: CLASSIFY_DATASETS[1:] for e in CLASSIFY_EVALUATIONS}, "svm": ("voc",)}


def classify_split(key: str) -> tuple[str, str] | None:
    """``(evaluation, dataset)`` of a classification result on a dataset read from disk (``knn_cifar10`` ->
    ``("knn", "cifar10")``, ``svm_voc`` -> ``("svm", "voc")``), else None."""
    for name in sorted(ON_DISK, key=len, reverse=True):  # linear_sgd before linear
        if key.startswith(name + "_") and key.removeprefix(name + "_") in ON_DISK[name]:
            return name, key.removeprefix(name + "_")
    return None


def classify_keys(evaluation: str, evaluations: Sequence[str]) -> list[str]:
    """``evaluation``'s own key and its keys on datasets read from disk, those present in ``evaluations``."""
    return [k for k in evaluations if k == evaluation or (classify_split(k) or ("",))[0] == evaluation]


def command(*words: str | Path) -> str:
    """A shell command line, each word quoted where needed."""
    return " ".join(shlex.quote(str(w)) for w in words)


def eval_command(evaluation: str, run_paths: Sequence[Path]) -> str:
    """The command that fills ``results.json[evaluation]``: ``invarlab eval`` names its sub-commands with
    hyphens (``factor_probes`` -> ``factor-probes``); a real dataset is an option
    (``segment_retrieval_voc`` -> ``invarlab eval segment-retrieval RUN --dataset voc --root PATH``)."""
    return "; ".join(combined.eval_commands(evaluation, run_paths))


def _settings(metas: dict[str, Any]) -> str:
    """One settings line when every run used the same settings, else a table with a row per run."""
    metas = {label: flatten(m) for label, m in metas.items() if isinstance(m, dict) and m}
    if not metas:
        return ""
    distinct = {tuple(sorted((k, tb.fmt(v)) for k, v in m.items())) for m in metas.values()}
    if len(distinct) == 1:
        return markup.settings({k: tb.fmt(v) for k, v in next(iter(metas.values())).items()})
    t = tb.metric_table(dict(metas))
    t.corner = "settings of"
    return '<p class="settings">settings differ:</p>' + markup.table(t)


def _table(t: tb.Table, corner: str) -> str:
    if t.corner == "representation":
        t.corner = corner
    return markup.table(t)


def _body(key: str, rows: tb.Rows, corner: str) -> list[str]:
    if key == "invariance":
        return [
            _table(tb.invariance_table(rows), corner),
            markup.figure(plots.invariance_bars(rows), "Top-10 / Top-25 RIS per factor", "invariance bars"),
            markup.figure(plots.invariance_radar(rows), "Top-25 RIS profile", "invariance radar"),
        ]
    if key == "factor_probes":
        return [
            _table(tb.probe_table(rows), corner),
            markup.figure(plots.probe_bars(rows), "probe accuracy; dashed: chance", "factor probe bars"),
        ]
    if key == "fewshot":
        return [_table(tb.fewshot_table(rows), corner)]
    if key == "corruptions":
        return [
            _table(tb.corruption_summary_table(rows), corner),
            "<h3>Per corruption (mean over severities)</h3>",
            markup.table(tb.corruption_table(rows)),
            markup.figure(plots.corruption_curves(rows), "accuracy against severity", "corruption curves"),
        ]
    return [_table(tb.metric_table(rows, key), corner)]


def evaluation_sections(
    rows_of: Callable[[str], tb.Rows],
    evaluations: Sequence[str],
    metas: dict[str, dict[str, Any]],
    run_paths: Sequence[Path],
    corner: str = "representation",
    trained_on: str = "world",
) -> tuple[list[str], list[tuple[str, str]]]:
    """Sections (markup) and navigation entries for every known evaluation and any other stored ones.

    ``rows_of(evaluation)`` gives the rows; ``metas[evaluation]`` the settings per row label;
    ``evaluations`` the keys present in any run's results, so unknown ones are shown too; ``corner`` heads
    the row labels. A classification section shows its world key and every ``<evaluation>_<dataset>`` key
    (one table per dataset); ``trained_on`` (the runs' data source) other than the world marks the
    evaluations only the world can fill as "not evaluated (needs the world)".
    """
    out, nav = [], []
    others = [
        (e, f"Other: {e}", "")
        for e in evaluations
        if e not in KNOWN and not combined.split_key(e) and not classify_split(e)
    ]
    for key, title, about in (*EVALUATIONS, *others):
        anchor = f"eval-{key}"
        rows = rows_of(key)
        on_disk = [k for k in classify_keys(key, evaluations) if k != key and rows_of(k)]
        if key in combined.SECTIONS:  # drawn from several results.json keys
            body = [f'<p class="sub">{markup.esc(about)}</p>']
            body += combined.body(key, evaluations, rows_of, metas, run_paths, corner, _settings)
        elif rows or on_disk:
            body = [f'<p class="sub">{markup.esc(about)}</p>' if about else ""]
            for k in ([key] if rows else []) + on_disk:
                if on_disk:
                    dataset = (classify_split(k) or ("", "world"))[1]
                    body.append(f"<h3>{markup.esc(combined.DATASET_LABELS.get(dataset, dataset))}</h3>")
                body += [_settings(metas.get(k, {})), *_body(key, rows_of(k), corner)]
        elif key in OPTIONAL:
            continue  # run only on request: no "not evaluated" note when nobody asked for it
        elif trained_on != "world" and key in WORLD_ONLY:
            body = [
                markup.hint(
                    f"not evaluated (needs the world; this run trained on {trained_on})",
                    eval_command(key, run_paths),
                )
            ]
        else:
            body = [markup.hint("not evaluated", eval_command(key, run_paths))]
        out.append(markup.section(anchor, title, body))
        nav.append((anchor, title.split(" (")[0]))
    return out, nav


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {sec:02d}s"


def training_summary(records: list[dict[str, Any]]) -> dict[str, str]:
    """Steps, epochs, wall time, median throughput and the last loss / kNN monitor of a metrics log."""
    out: dict[str, str] = {}

    def last(key: str) -> float | None:
        values = [number(r.get(key)) for r in records if key in r]
        values = [v for v in values if is_finite(v)]
        return values[-1] if values else None

    for key, label in (("step", "steps"), ("epoch", "epochs")):
        value = max((number(r.get(key)) or 0 for r in records), default=0)
        if value:
            out[label] = str(int(value) + (1 if key == "epoch" else 0))
    if (t := last("time")) is not None:
        out["wall time"] = _duration(t)
    speeds = [v for r in records if is_finite(v := number(r.get("train/img_per_s")))]
    if speeds:
        out["img/s (median)"] = f"{statistics.median(speeds):.0f}"
    if (loss := last("train/loss")) is not None:
        out["final loss"] = tb.fmt(loss)
    if (knn := last("knn/top1")) is not None:
        out["kNN monitor"] = tb.fmt(knn)
    return out


def training_section(runs: dict[str, list[dict[str, Any]]], single: bool, floor: float | None = None) -> str:
    """Loss / lr / kNN monitor curves (overlaid across runs), and the other train scalars for one run.
    ``floor`` (the random-init kNN top-1 of results.json, when evaluated) and the monitor's chance level (of
    the first run that logged it) are dashed lines on the monitor's panel."""
    present = {label: recs for label, recs in runs.items() if recs}
    if not present:
        return markup.section(
            "training",
            "Training curves",
            [markup.hint("no training log (metrics.jsonl): training writes it", None)],
        )
    chance = _first_chance(present)
    caption = "training loss, learning rate, online kNN monitor"
    if floor is not None or chance is not None:
        caption += (
            " (dashed: "
            + ", ".join(n for n, v in (("random-init floor", floor), ("chance", chance)) if v is not None)
            + ")"
        )
    body = [markup.figure(plots.training_curves(present, floor, chance), caption, "training curves")]
    if single:
        records = next(iter(present.values()))
        body.append(markup.settings(training_summary(records), label=""))
        extras = plots.train_extras(records)
        if extras:
            body.append(
                f"<details><summary>other training scalars</summary>{markup.figure(extras, alt='train scalars')}</details>"
            )
    else:
        summaries = {label: training_summary(recs) for label, recs in runs.items()}
        columns = list(dict.fromkeys(k for s in summaries.values() for k in s))
        t = tb.Table(
            columns=columns,
            rows=[(lbl, [s.get(c, tb.MISSING) for c in columns]) for lbl, s in summaries.items()],
            corner="run",
        )
        body.append(markup.table(t))
    return markup.section("training", "Training curves", body)


def _first_chance(runs: dict[str, list[dict[str, Any]]]) -> float | None:
    return next((c for recs in runs.values() if (c := plots.monitor_chance(recs)) is not None), None)


def figure_sections(
    run: RunData, rows: tb.Rows, key: str = "retrieval"
) -> tuple[list[str], list[tuple[str, str]]]:
    """The retrieval section (its ``rows`` of precision numbers and ``figures/<key>.png``; ``key`` is
    ``retrieval`` or ``retrieval_<dataset>``) and every other figure an evaluation wrote."""
    retrieval = run.figures.get(f"{key}.png")
    body = [_settings({run.name: run.meta.get(key)})]
    if rows:
        body.append(_table(tb.metric_table(rows, "retrieval"), "representation"))
    if retrieval:
        body.append(
            markup.figure(
                retrieval,
                f"queries and their nearest neighbours (figures/{key}.png)",
                "retrieval grid",
                600,
            )
        )
    if not rows and not retrieval:
        body = [markup.hint("not evaluated", eval_command("retrieval", [run.path]))]
    out = [markup.section("retrieval", "Nearest-neighbour retrieval", body)]
    nav = [("retrieval", "Retrieval")]
    others = {name: png for name, png in run.figures.items() if name != f"{key}.png"}
    if others:
        figs = [markup.figure(png, f"figures/{name}", name, 400) for name, png in others.items()]
        out.append(markup.section("figures", "Other figures", figs))
        nav.append(("figures", "Figures"))
    return out, nav
