"""P3's section of a run's report (docs/eval_looc.md): one row per representation (V, Z_0, every Z_i, LooC++,
the random floor), one column per number PAPERS.md §3.9's tables put side by side (rotation / colour /
texture probe accuracy, category kNN / linear, few-shot, fine-grained, corruptions), and a grouped bar chart.

Shown only when the run has ``sensitivity`` results; the full metrics of ``sensitivity`` and ``finegrained*``
follow in a collapsible table.
"""

from __future__ import annotations

import re
from typing import Any

from invarlab.report import markup, plots
from invarlab.report import tables as tb
from invarlab.report.run import RunData, is_finite, number

__all__ = [
    "KNN_PROBES",
    "SENSITIVITY",
    "is_looc_key",
    "looc_columns",
    "looc_rows",
    "looc_section",
    "space_bars",
    "space_label",
]

SENSITIVITY = "sensitivity"
PROBES = (
    ("rotation", "rotation"),
    ("colour_jitter", "colour transform"),
    ("colour", "object hue"),
    ("light_colour", "light colour"),
    ("texture", "texture"),
)
# augmentation probes also shown decoded by nearest neighbours (eval/sensitivity.py: knn_top1)
KNN_PROBES = (("rotation", "rotation"), ("colour_jitter", "colour transform"))
_FINEGRAINED = re.compile(r"^finegrained(_[a-z0-9]+)?$")


def is_looc_key(key: str) -> bool:
    """``results.json`` keys this section shows: ``sensitivity``, ``finegrained``, ``finegrained_<dataset>``."""
    return key == SENSITIVITY or bool(_FINEGRAINED.match(key))


def space_label(rep: str) -> str:
    """``model`` -> ``V (backbone)``, ``z0`` -> ``Z_0 (invariant)``, ``z_colour`` -> ``Z_colour``, ..."""
    if rep == "model":
        return "V (backbone)"
    if rep == "z0":
        return "Z_0 (invariant)"
    if rep.startswith("z_"):
        return f"Z_{rep[2:]} (variant to {rep[2:]})"
    if rep == "looc++":
        return "LooC++"
    return tb.floor_label() if rep == tb.FLOOR else rep


def _order(reps: list[str]) -> list[str]:
    rank = {"model": 0, "z0": 1, "looc++": 3, tb.FLOOR: 4}
    return sorted(reps, key=lambda r: (rank.get(r, 2), reps.index(r)))


def _get(metrics: Any, *path: str) -> float | None:
    for part in path:
        metrics = metrics.get(part) if isinstance(metrics, dict) else None
    return number(metrics)


def _fewshot_setting(run: RunData) -> str | None:
    settings = {k for m in run.section("fewshot").values() for k, v in m.items() if isinstance(v, dict)}
    if "5way_5shot" in settings:
        return "5way_5shot"
    return min(settings, key=tb.fewshot_order) if settings else None


def _shots(setting: str) -> tuple[int, str]:
    # "allway_5shot" before "allway_10shot" (numeric, not alphabetical)
    match = re.search(r"(\d+)shot$", setting)
    return (int(match[1]) if match else 1 << 30, setting)


def looc_columns(run: RunData) -> list[tuple[str, tuple[str, ...], float]]:
    """``(column label, path into results.json, scale)`` of every column the run has numbers for; probe columns
    first. Corruption accuracy is stored as a fraction and shown in percent like the rest."""
    cols: list[tuple[str, tuple[str, ...], float]] = [
        (f"{label} probe", (SENSITIVITY, key, "top1"), 1.0) for key, label in PROBES
    ]
    cols += [(f"{label} kNN", (SENSITIVITY, key, "knn_top1"), 1.0) for key, label in KNN_PROBES]
    cols += [("kNN top-1", ("knn", "top1"), 1.0), ("linear top-1", ("linear", "top1"), 1.0)]
    setting = _fewshot_setting(run)
    if setting:
        cols.append((f"few-shot {setting.replace('_', ' ')}", ("fewshot", setting, "mean"), 1.0))
    for key in sorted(k for k in run.results if _FINEGRAINED.match(k)):
        dataset = key.removeprefix("finegrained").lstrip("_") or "world"
        cols.append((f"fine-grained {dataset} linear", (key, "linear", "top1"), 1.0))
        shots = {s for m in run.section(key).values() for s in (m.get("fewshot") or {})}
        for s in sorted(shots, key=_shots):
            cols.append((f"fine-grained {dataset} {s.replace('_', ' ')}", (key, "fewshot", s, "mean"), 1.0))
    cols.append(("corruption mean", ("corruptions", "mean"), 100.0))
    return [c for c in cols if any(_value(run, rep, c) is not None for rep in run.section(SENSITIVITY))]


def _value(run: RunData, rep: str, column: tuple[str, tuple[str, ...], float]) -> float | None:
    _, path, scale = column
    value = _get(run.section(path[0]).get(rep), *path[1:])
    return value * scale if is_finite(value) else None  # type: ignore[operator]


def looc_rows(run: RunData) -> tuple[list[str], dict[str, list[float | None]], dict[str, float | None]]:
    """``(column labels, {row label: values}, {column label: chance})`` of the per-space table."""
    columns = looc_columns(run)
    reps = _order(list(run.section(SENSITIVITY)))
    rows = {space_label(rep): [_value(run, rep, c) for c in columns] for rep in reps}
    chance: dict[str, float | None] = {}
    for label, path, _ in columns:
        if path[0] == SENSITIVITY:
            values = [_get(m, path[1], "chance") for m in run.section(SENSITIVITY).values()]
            chance[label] = next((v for v in values if is_finite(v)), None)
    return [c[0] for c in columns], rows, chance


def space_bars(
    columns: list[str], rows: dict[str, list[float | None]], chance: dict[str, float | None]
) -> bytes | None:
    """Grouped bars: one group per column, one bar per representation, probe chance levels as dashed ticks."""
    if not columns or not rows:
        return None
    fig, axes = plots._grid(plots.WIDTH, 3.6, legend=[*rows, "chance"], bottom=1.1)
    ax = axes[0, 0]
    n = len(rows)
    width = 0.8 / n
    for i, ((label, values), color) in enumerate(zip(rows.items(), plots._colors(list(rows)), strict=True)):
        xs = [c - 0.4 + width * (i + 0.5) for c in range(len(columns))]
        ys = [v if is_finite(v) else 0.0 for v in values]
        hatch = "//" if label.startswith("random") else None
        ax.bar(xs, ys, width=width * 0.95, color=color, label=label, hatch=hatch, edgecolor="white", lw=0)
    for c, column in enumerate(columns):
        if is_finite(chance.get(column)):
            ax.hlines(chance[column], c - 0.45, c + 0.45, colors="black", lw=1.5, linestyles="--")
    ax.plot([], [], "k--", lw=1.5, label="chance")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title("What each space keeps: augmentation probes and downstream accuracy", fontsize=10)
    plots._legend(fig, ax)
    return plots._png(fig)


def _details(run: RunData) -> list[str]:
    out = []
    for key in [SENSITIVITY, *sorted(k for k in run.results if _FINEGRAINED.match(k))]:
        rows = {space_label(r): run.section(key)[r] for r in _order(list(run.section(key)))}
        if rows:
            table = tb.metric_table(rows, key)
            table.corner = "representation"
            meta = run.meta.get(key)
            settings = (
                markup.settings({k: tb.fmt(v) for k, v in meta.items()}) if isinstance(meta, dict) else ""
            )
            out.append(
                f"<details><summary>{markup.esc(key)}: every metric</summary>{settings}{markup.table(table)}</details>"
            )
    return out


def looc_section(run: RunData) -> tuple[str, tuple[str, str]] | None:
    """The section markup and its navigation entry, or None when the run has no sensitivity results."""
    if not run.section(SENSITIVITY):
        return None
    columns, rows, chance = looc_rows(run)
    table = tb.Table(
        columns=columns,
        rows=[(label, [tb.fmt(v) for v in values]) for label, values in rows.items()],
        floor_rows={label for label in rows if label.startswith("random")} | {"chance"},
    )
    if any(v is not None for v in chance.values()):
        table.rows.append(("chance", [tb.fmt(chance.get(c)) for c in columns]))
    about = (
        "P3 (LooC, PAPERS.md §3.8-3.9): linear-probe accuracy (%) of the rotation (4-way), the colour transform "
        "(10-way), the object's dominant hue, the light colour and the object's texture family from each "
        "representation, and the rotation and colour transform decoded by kNN in the representation's own "
        "cosine geometry (higher = the augmentation's information is kept), beside the downstream accuracies. A "
        "space variant to an augmentation should keep what that augmentation changes; the all-invariant Z_0 "
        "should lose it. A head that is a full-rank map of V keeps everything for a linear probe: the kNN "
        "columns show what its loss made it ignore."
    )
    body = [
        f'<p class="sub">{markup.esc(about)}</p>',
        markup.table(table),
        markup.figure(
            space_bars(columns, rows, chance),
            "accuracy per representation; dashed: probe chance",
            "space bars",
        ),
        *_details(run),
    ]
    return markup.section("eval-looc", "LooC spaces: sensitivity and downstream", body), (
        "eval-looc",
        "LooC spaces",
    )
