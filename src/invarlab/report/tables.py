"""The report's tables as plain data: which rows, which columns, which formatted cells.

Every builder takes ``rows``: an ordered ``{row label: metrics of one representation, or None}``. A single-run
report's rows are the run's representations (:func:`run_rows`); a comparison's are one row per run for the
"model" representation plus the first run's random floor (:func:`compare_rows`). The HTML layer escapes and
lays them out; nothing here knows about HTML.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from invarlab.eval.config import PROBE_FACTORS
from invarlab.report.run import RunData, flatten, number

__all__ = [
    "FACTOR_LABELS",
    "INVARIANCE_FACTORS",
    "PROBE_FACTORS",
    "Rows",
    "Table",
    "compare_rows",
    "corruption_rows",
    "corruption_summary_table",
    "corruption_table",
    "fewshot_order",
    "fewshot_table",
    "fmt",
    "invariance_table",
    "metric_table",
    "probe_table",
    "run_rows",
]

Rows = dict[str, "dict[str, Any] | None"]  # {row label: metrics of one representation, or None}
MISSING = "—"
FLOOR = "random"
# P1's table order (PAPERS.md §1.7); the factor probes' factors come from the evaluation config.
INVARIANCE_FACTORS = (
    "occlusion",
    "viewpoint",
    "illum_direction",
    "illum_color",
    "instance",
    "instance_viewpoint",
)
FACTOR_LABELS = {
    "occlusion": "Occlusion",
    "viewpoint": "Viewpoint",
    "illum_direction": "Illum. dir",
    "illum_color": "Illum. color",
    "instance": "Instance",
    "instance_viewpoint": "Instance+Viewpoint",
    "azimuth": "Azimuth",
    "elevation": "Elevation",
    "light_direction": "Light dir",
    "light_color": "Light color",
    "category": "Category",
}
# Column order per evaluation; keys not listed follow, except hidden prefixes (per-candidate validation scores,
# the retrieval grid's file name: the grid itself is shown).
PREFERRED = {
    "knn": ("top1", "top5"),
    "linear": ("top1", "top5", "weight_decay"),
    "linear_sgd": ("top1", "top5"),
    "svm": ("map",),
    "retrieval": ("precision_at_1",),
}
HIDDEN = {"linear": ("val_top1",), "retrieval": ("figure",)}


@dataclass
class Table:
    """``columns`` label the value cells; ``groups`` (label, span) is an optional header row above them."""

    columns: list[str]
    rows: list[tuple[str, list[str]]]
    groups: list[tuple[str, int]] = field(default_factory=list)
    floor_rows: set[str] = field(default_factory=set)  # row labels drawn as a reference (the random floor)
    corner: str = "representation"


def fmt(value: Any) -> str:
    """A metric for a cell: ints as they are, floats with 2 decimals, 3 below 1, 3 significant digits
    below 0.01."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def _rep_order(reps: Iterable[str]) -> list[str]:
    # The trained model first, named spaces in their stored order, the random floor last.
    reps = list(reps)
    head = [r for r in reps if r == "model"]
    tail = [r for r in reps if r == FLOOR]
    return head + [r for r in reps if r not in ("model", FLOOR)] + tail


def floor_label(run_name: str | None = None) -> str:
    return f"random floor ({run_name})" if run_name else "random (floor)"


def run_rows(run: RunData, evaluation: str) -> dict[str, dict[str, Any] | None]:
    """One row per representation of ``run`` for ``evaluation``; ``{}`` when it was not evaluated."""
    section = run.section(evaluation)
    return {(floor_label() if r == FLOOR else r): section[r] for r in _rep_order(section)}


def compare_rows(runs: Sequence[RunData], evaluation: str) -> dict[str, dict[str, Any] | None]:
    """One row per run ("model"; None where that run lacks it) plus the first run's random floor, if any;
    ``{}`` when no run has the evaluation."""
    if not any(run.section(evaluation) for run in runs):
        return {}
    rows: dict[str, dict[str, Any] | None] = {run.name: run.section(evaluation).get("model") for run in runs}
    floor = runs[0].section(evaluation).get(FLOOR)
    if floor is not None:
        rows[floor_label(runs[0].name)] = floor
    return rows


def _floors(rows: dict[str, Any]) -> set[str]:
    return {label for label in rows if label.startswith("random")}


def _ordered(keys: Iterable[str], preferred: Sequence[str]) -> list[str]:
    keys = list(dict.fromkeys(keys))
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


def _factor_keys(rows: dict[str, Any], preferred: Sequence[str]) -> list[str]:
    keys = [k for metrics in rows.values() if metrics for k, v in metrics.items() if isinstance(v, dict)]
    return _ordered(keys, preferred)


def invariance_table(rows: dict[str, dict[str, Any] | None]) -> Table:
    """P1's layout: rows representations, a Top-10 and a Top-25 column under every factor."""
    factors = _factor_keys(rows, INVARIANCE_FACTORS)
    table = Table(columns=[], rows=[], floor_rows=_floors(rows))
    for factor in factors:
        table.groups.append((FACTOR_LABELS.get(factor, factor), 2))
        table.columns += ["Top-10", "Top-25"]
    for label, metrics in rows.items():
        cells = []
        for factor in factors:
            entry = (metrics or {}).get(factor)
            entry = entry if isinstance(entry, dict) else {}
            cells += [fmt(entry.get("top10")), fmt(entry.get("top25"))]
        table.rows.append((label, cells))
    return table


def probe_accuracy(entry: dict[str, Any]) -> Any:
    """A factor probe's accuracy: ``accuracy``, or ``top1`` as :func:`invarlab.eval.invariance.factor_probe`
    writes it."""
    return entry.get("accuracy", entry.get("top1"))


def probe_table(rows: dict[str, dict[str, Any] | None]) -> Table:
    """Rows representations, one accuracy column per factor, and a last row with each factor's chance."""
    factors = _factor_keys(rows, PROBE_FACTORS)
    table = Table(columns=[FACTOR_LABELS.get(f, f) for f in factors], rows=[], floor_rows=_floors(rows))
    chance: dict[str, Any] = {}
    for label, metrics in rows.items():
        cells = []
        for factor in factors:
            entry = (metrics or {}).get(factor)
            entry = entry if isinstance(entry, dict) else {}
            cells.append(fmt(probe_accuracy(entry)))
            if chance.get(factor) is None:
                chance[factor] = entry.get("chance")
        table.rows.append((label, cells))
    table.rows.append(("chance", [fmt(chance.get(f)) for f in factors]))
    table.floor_rows.add("chance")
    return table


def metric_table(rows: dict[str, dict[str, Any] | None], evaluation: str = "") -> Table:
    """Any evaluation: nested metrics flattened to ``a/b`` columns, known ones first."""
    hidden = HIDDEN.get(evaluation, ())
    flat = {label: flatten(m) if m else {} for label, m in rows.items()}
    keys = [k for f in flat.values() for k in f if not any(k == h or k.startswith(h + "/") for h in hidden)]
    columns = _ordered(keys, PREFERRED.get(evaluation, ()))
    table = Table(columns=[_short(c) for c in columns], rows=[], floor_rows=_floors(rows))
    table.rows = [(label, [fmt(f.get(c)) for c in columns]) for label, f in flat.items()]
    return table


def _short(column: str) -> str:
    # SVM's per-class APs read as class names; the prefix would repeat in every header.
    return column.removeprefix("per_class/")


def fewshot_order(setting: str) -> tuple:
    # "5way_1shot" sorts by ways then shots, numerically; anything else after, alphabetically.
    match = re.fullmatch(r"(\d+)way_(\d+)shot", setting)
    return (0, int(match[1]), int(match[2]), "") if match else (1, 0, 0, setting)


def fewshot_table(rows: dict[str, dict[str, Any] | None]) -> Table:
    """One column per ``<n>way_<k>shot`` setting, cells ``mean ± ci95``."""
    settings = sorted({k for m in rows.values() if m for k in m}, key=fewshot_order)
    table = Table(columns=[s.replace("_", " ") for s in settings], rows=[], floor_rows=_floors(rows))
    for label, metrics in rows.items():
        cells = []
        for setting in settings:
            entry = (metrics or {}).get(setting)
            if isinstance(entry, dict):
                cells.append(_mean_ci(entry.get("mean"), entry.get("ci95")))
            else:
                cells.append(fmt(entry))
        table.rows.append((label, cells))
    return table


def _mean_ci(mean: Any, ci: Any) -> str:
    # The interval with the mean's decimals, so "60.00 ± 0.90" rather than "60.00 ± 0.900".
    m, c = number(mean), number(ci)
    if m is None or c is None or not (math.isfinite(m) and math.isfinite(c)):
        return fmt(mean) + (f" ± {fmt(ci)}" if ci is not None else "")
    decimals = 2 if abs(m) >= 1 else 3
    return f"{m:.{decimals}f} ± {c:.{decimals}f}"


def corruption_rows(metrics: dict[str, Any] | None) -> dict[str, list[float | None]]:
    """``{corruption: [accuracy at each severity]}`` from either stored form: a list per corruption, or
    ``{"accuracy": [...], "mean": m}`` as :func:`invarlab.eval.corruptions.corruption_robustness` writes."""
    per = (metrics or {}).get("per_corruption")
    out: dict[str, list[float | None]] = {}
    for name, entry in per.items() if isinstance(per, dict) else ():
        accs = entry.get("accuracy") if isinstance(entry, dict) else entry
        if isinstance(accs, list):
            out[str(name)] = [number(a) for a in accs]
    return out


def corruption_severities(metrics: dict[str, Any] | None, count: int) -> list[int]:
    """The severities of ``count`` stored accuracies: the run's ``severities`` list when it has that length
    (e.g. ``[1, 3, 5]`` for a quick evaluation), else ``1..count`` (results written before it was stored)."""
    stored = (metrics or {}).get("severities")
    if isinstance(stored, list) and len(stored) == count and all(isinstance(v, int) for v in stored):
        return list(stored)
    return list(range(1, count + 1))


def corruption_summary_table(rows: dict[str, dict[str, Any] | None]) -> Table:
    """Clean and mean corrupted accuracy (and per family, when stored) per representation."""
    trimmed = {
        label: {k: v for k, v in (m or {}).items() if k in ("clean", "mean", "per_family")} or None
        for label, m in rows.items()
    }
    table = metric_table(trimmed)
    table.columns = [c.removeprefix("per_family/") for c in table.columns]
    return table


def corruption_table(rows: dict[str, dict[str, Any] | None]) -> Table:
    """Transposed: one row per corruption, one column per representation, cells the mean over severities."""
    per = {label: corruption_rows(m) for label, m in rows.items()}
    names = list(dict.fromkeys(n for p in per.values() for n in p))
    table = Table(columns=list(rows), rows=[], corner="corruption")
    for name in names:
        cells = []
        for label in rows:
            accs = [a for a in per[label].get(name, []) if a is not None]
            cells.append(fmt(sum(accs) / len(accs)) if accs else MISSING)
        table.rows.append((name, cells))
    return table
