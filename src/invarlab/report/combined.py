"""Report sections drawn from several ``results.json`` keys at once: real-data invariance and the dense
evaluations.

* ``invariance_real``: the RIS of ``invarlab eval invariance RUN --dataset got10k|aloi|pascal3d`` (keys
  ``invariance_<dataset>``, the world's ``invariance`` shape) merged into one table in P1's layout
  (PAPERS.md §1.7): a Top-10 and a Top-25 column per factor, and a table of the sets behind each factor
  with its dataset (occlusion on GOT-10k, viewpoint and illumination on ALOI, instance on Pascal3D+, §1.4).
* ``dense``: segment retrieval, label propagation and the segmentation probe (keys ``<name>`` on the world,
  ``<name>_<dataset>`` on VOC / DAVIS), one column group per key: mIoU, or J&F / J / F.

Both names are section names, not ``results.json`` keys: their rows come from the member keys
(:func:`members`) through the caller's ``rows_of``, so a single run (rows = representations) and a
comparison (rows = runs) use the same code, as in :mod:`invarlab.report.sections`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from invarlab.eval.dense_config import DENSE_EVALUATIONS
from invarlab.report import markup, plots
from invarlab.report import tables as tb

__all__ = [
    "DENSE",
    "REAL",
    "SECTIONS",
    "body",
    "dense_table",
    "eval_commands",
    "members",
    "real_invariance_rows",
    "real_invariance_table",
    "real_sets_table",
    "split_key",
]

REAL = "invariance_real"
DENSE = "dense"
SECTIONS = (REAL, DENSE)
# P1's column order: occlusion (GOT-10k), viewpoint and illumination (ALOI), instance (Pascal3D+).
REAL_ORDER = ("got10k", "aloi", "pascal3d")
DATASET_LABELS = {
    "world": "world",
    "aloi": "ALOI",
    "got10k": "GOT-10k",
    "pascal3d": "Pascal3D+",
    "voc": "VOC",
    "davis": "DAVIS",
    "folder": "your folder",
    "imagenet": "ImageNet",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "stl10": "STL-10",
}
DENSE_TITLES = {
    "segment_retrieval": "Segment retrieval (mIoU)",
    "label_propagation": "Label propagation",
    "seg_probe": "Seg. probe (mIoU)",
}
# The real dataset each dense evaluation runs on besides the world (invarlab.eval.dense_suite).
DENSE_REAL = {"segment_retrieval": "voc", "label_propagation": "davis", "seg_probe": "voc"}
PROPAGATION_COLUMNS = (("J&F-Mean", "J&F"), ("J-Mean", "J"), ("F-Mean", "F"))
SET_COUNTS = (("images", "images"), ("sets", "sets"), ("scored_sets", "scored sets"), ("classes", "classes"))
ROOT_PLACEHOLDER = "PATH"

Settings = Callable[[dict[str, Any]], str]  # {row label: an evaluation's _meta} -> markup


# ------------------------------------------------------------------------------------------------ keys
def split_key(key: str) -> tuple[str, str, str] | None:
    """``(section, evaluation, dataset)`` of a ``results.json`` key shown in a combined section, else None:
    ``invariance_aloi`` -> ``(REAL, "invariance", "aloi")``, ``seg_probe`` -> ``(DENSE, "seg_probe",
    "world")``, ``label_propagation_davis`` -> ``(DENSE, "label_propagation", "davis")``."""
    if key.startswith("invariance_") and key != REAL:
        return REAL, "invariance", key.removeprefix("invariance_")
    for name in DENSE_EVALUATIONS:
        if key == name:
            return DENSE, name, "world"
        if key.startswith(name + "_"):
            return DENSE, name, key.removeprefix(name + "_")
    return None


def _order(key: str) -> tuple:
    _, name, dataset = split_key(key) or ("", key, "")
    if name == "invariance":
        known = REAL_ORDER.index(dataset) if dataset in REAL_ORDER else len(REAL_ORDER)
        return (known, dataset)
    return (DENSE_EVALUATIONS.index(name), dataset != "world", dataset)


def members(section: str, evaluations: Iterable[str]) -> list[str]:
    """The keys among ``evaluations`` that ``section`` shows, in column order."""
    keys = [k for k in dict.fromkeys(evaluations) if (s := split_key(k)) and s[0] == section]
    return sorted(keys, key=_order)


def eval_commands(key: str, run_paths: Sequence[Path]) -> list[str]:
    """The ``invarlab eval`` command lines that fill ``results.json[key]``, one per run: sub-commands are
    hyphenated and a real dataset is an option, ``invariance_aloi`` -> ``invarlab eval invariance RUN
    --dataset aloi --root PATH``, ``segment_retrieval_voc`` -> ``invarlab eval segment-retrieval RUN
    --dataset voc --root PATH``."""
    parts = split_key(key)
    name, extra = key, []
    if parts is not None:
        _, name, dataset = parts
        if dataset != "world":
            extra = ["--dataset", dataset, "--root", ROOT_PLACEHOLDER]
    words = ["invarlab", "eval", name.replace("_", "-")]
    return [" ".join(shlex.quote(str(w)) for w in (*words, p, *extra)) for p in run_paths]


def _suggested(section: str, present: Sequence[str]) -> list[str]:
    """Keys worth running that nothing in ``present`` covers: each real dataset; each dense evaluation on
    the world and on its real dataset."""
    if section == REAL:
        return [f"invariance_{d}" for d in REAL_ORDER if f"invariance_{d}" not in present]
    covered = {split_key(k)[1] for k in present}
    return [k for n in DENSE_EVALUATIONS if n not in covered for k in (n, f"{n}_{DENSE_REAL[n]}")]


# ---------------------------------------------------------------------------------------------- tables
def _labels(per_key: dict[str, tb.Rows]) -> list[str]:
    # Every row label of any key, the random floor last.
    labels = list(dict.fromkeys(label for rows in per_key.values() for label in rows))
    return [x for x in labels if not x.startswith("random")] + [x for x in labels if x.startswith("random")]


def _dataset_label(key: str) -> str:
    dataset = (split_key(key) or ("", "", key))[2]
    return DATASET_LABELS.get(dataset, dataset)


def real_invariance_rows(per_key: dict[str, tb.Rows]) -> tuple[tb.Rows, dict[str, str]]:
    """``per_key`` (``{invariance_<dataset>: rows}``) as one set of rows ``{label: {column: {top10, top25,
    ...}}}`` and the header of each column, ``{column: "Occlusion (GOT-10k)"}``. A column is the factor;
    a factor measured on two datasets gets ``"<factor> (<dataset>)"`` for the second."""
    columns: dict[str, tuple[str, str]] = {}
    headers: dict[str, str] = {}
    for key, rows in per_key.items():
        factors = [f for m in rows.values() if m for f, v in m.items() if isinstance(v, dict)]
        for factor in dict.fromkeys(factors):
            column = factor if factor not in columns else f"{factor} ({split_key(key)[2]})"
            columns[column] = (factor, key)
            headers[column] = f"{tb.FACTOR_LABELS.get(factor, factor)} ({_dataset_label(key)})"
    # P1's factor order (results.json stores them sorted by name), other columns after, as they came.
    p1 = tb.INVARIANCE_FACTORS
    order = sorted(columns, key=lambda c: p1.index(c) if c in p1 else len(p1))
    columns = {c: columns[c] for c in order}
    headers = {c: headers[c] for c in order}
    merged: tb.Rows = {
        label: {c: (per_key[key].get(label) or {}).get(f) for c, (f, key) in columns.items()}
        for label in _labels(per_key)
    }
    return merged, headers


def real_invariance_table(per_key: dict[str, tb.Rows]) -> tb.Table:
    """P1's layout (:func:`invarlab.report.tables.invariance_table`) over every real dataset. Factors are
    headed as in the world's table, so the two read column by column (and the table fits the page); the
    dataset of each is in :func:`real_sets_table`, and in the header of a factor that is not one of P1's
    (or is measured twice)."""
    merged, headers = real_invariance_rows(per_key)
    table = tb.invariance_table(merged)
    relabel = {c: h for c, h in headers.items() if c not in tb.FACTOR_LABELS}
    table.groups = [(relabel.get(label, label), span) for label, span in table.groups]
    return table


def real_sets_table(per_key: dict[str, tb.Rows]) -> tb.Table:
    """One row per set kind: images, sets, scored sets (3+ images), classes, from the first row that has
    them (every representation scores the same sets)."""
    merged, headers = real_invariance_rows(per_key)
    table = tb.Table(columns=[label for _, label in SET_COUNTS], rows=[], corner="set kind")
    for column, header in headers.items():
        entry = next((m[column] for m in merged.values() if m and isinstance(m.get(column), dict)), {})
        table.rows.append((header, [tb.fmt(entry.get(k)) for k, _ in SET_COUNTS]))
    return table


def _dense_columns(name: str, rows: tb.Rows) -> list[tuple[str, str]]:
    """(metric key, column label) of one dense key: J&F / J / F, or mIoU (the group's title says so: no
    label) and any ``miou_<subset>`` (labelled by the subset)."""
    if name == "label_propagation":
        return list(PROPAGATION_COLUMNS)
    subsets = dict.fromkeys(k for m in rows.values() if m for k in m if k.startswith("miou_"))
    return [("miou", ""), *((k, k.removeprefix("miou_")) for k in subsets)]


def _name(key: str) -> str:
    return (split_key(key) or ("", key, ""))[1]


def _group(key: str) -> str:
    name = _name(key)
    return f"{DENSE_TITLES.get(name, name)} · {_dataset_label(key)}"


def dense_table(per_key: dict[str, tb.Rows]) -> tb.Table:
    """Rows representations (or runs), the floor last; a column group per dense evaluation, a column per
    dataset and metric (``Segment retrieval (mIoU)``: world, VOC, VOC 7cls; ``Label propagation``: DAVIS
    J&F, DAVIS J, DAVIS F; ...). One group per evaluation rather than per key, and short column labels,
    keep all six keys within the page's width."""
    labels = _labels(per_key)
    table = tb.Table(columns=[], rows=[], floor_rows={x for x in labels if x.startswith("random")})
    cells: list[tuple[str, str]] = []
    for key, rows in per_key.items():  # members() order: keys of one evaluation are adjacent
        columns = _dense_columns(_name(key), rows)
        title = DENSE_TITLES.get(_name(key), _name(key))
        if table.groups and table.groups[-1][0] == title:
            table.groups[-1] = (title, table.groups[-1][1] + len(columns))
        else:
            table.groups.append((title, len(columns)))
        table.columns += [f"{_dataset_label(key)} {label}".strip() for _, label in columns]
        cells += [(key, metric) for metric, _ in columns]
    for label in labels:
        table.rows.append((label, [tb.fmt((per_key[k].get(label) or {}).get(m)) for k, m in cells]))
    return table


def _headline_first(key: str, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    # results.json stores keys sorted ("iou" before "miou"); the table's columns start with the headline.
    if not metrics:
        return metrics
    first = [m for m, _ in _dense_columns(_name(key), {"": metrics})]
    return {k: metrics[k] for k in first if k in metrics} | metrics


def _dense_bars(per_key: dict[str, tb.Rows]) -> bytes | None:
    # The first (headline) metric of each key: mIoU or J&F.
    panels = {}
    for key, rows in per_key.items():
        metric, label = _dense_columns(_name(key), rows)[0]
        title = DENSE_TITLES.get(_name(key), _name(key)).removesuffix(" (mIoU)")
        panels[f"{title}\n{_dataset_label(key)} {label or 'mIoU'}"] = {
            x: (rows.get(x) or {}).get(metric) for x in _labels({key: rows})
        }
    return plots.summary_bars(panels)


# ---------------------------------------------------------------------------------------------- markup
def _hint(what: str, commands: Sequence[str]) -> str:
    lines = "<br>".join(f"<code>{markup.esc(c)}</code>" for c in commands)
    return f'<p class="missing">{markup.esc(what)}: run<br>{lines}</p>'


def _meta(metas: dict[str, Any], key: str) -> dict[str, Any]:
    # The evaluation's settings per row label; set counts are shown in their own table.
    out = {}
    for label, meta in (metas.get(key) or {}).items():
        if isinstance(meta, dict) and meta:
            out[label] = {"evaluation": key} | {k: v for k, v in meta.items() if k != "counts"}
    return out


def body(
    section: str,
    evaluations: Sequence[str],
    rows_of: Callable[[str], tb.Rows],
    metas: dict[str, dict[str, Any]],
    run_paths: Sequence[Path],
    corner: str,
    settings: Settings,
) -> list[str]:
    """The markup of ``section`` (:data:`REAL` or :data:`DENSE`): settings of every member key, the table,
    a chart, and "not evaluated" notes with the commands for what is missing."""
    per_key = {k: rows for k in members(section, evaluations) if (rows := rows_of(k))}
    todo = [c for k in _suggested(section, list(per_key)) for c in eval_commands(k, run_paths)]
    if not per_key:
        return [_hint("not evaluated", todo)]
    out = [settings(_meta(metas, k)) for k in per_key]
    if section == REAL:
        merged, _ = real_invariance_rows(per_key)
        table = real_invariance_table(per_key)
        table.corner = corner
        out += [
            markup.table(table),
            markup.figure(plots.invariance_bars(merged), "Top-10 / Top-25 RIS per factor", "real RIS bars"),
            "<h3>Sets</h3>",
            markup.table(real_sets_table(per_key)),
        ]
    else:
        table = dense_table(per_key)
        table.corner = corner
        details = []
        for key, rows in per_key.items():
            t = tb.metric_table({label: _headline_first(key, m) for label, m in rows.items()}, key)
            t.corner = corner
            details += [f"<h3>{markup.esc(_group(key))} ({markup.esc(key)})</h3>", markup.table(t)]
        out += [
            markup.table(table),
            markup.figure(_dense_bars(per_key), "headline metric per evaluation", "dense bars"),
            f"<details><summary>every number (per-class IoU, recall, counts)</summary>{''.join(details)}</details>",
        ]
    if todo:
        out.append(_hint("not evaluated yet", todo))
    return out
