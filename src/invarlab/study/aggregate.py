"""A finished (or partly finished) study folder as numbers: per run and metric the per-seed values, their mean
and 95% interval (:mod:`invarlab.study.stats`), the study's tables and the verdict of every claim, written to
``study.json``, ``study.md`` and ``study.html``."""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Any

from invarlab.atomic import atomic_write_text
from invarlab.study.runner import Cell
from invarlab.study.spec import Study
from invarlab.study.stats import bootstrap_interval, mean_interval, verdict

__all__ = ["aggregate", "lookup", "write_study"]


def _flatten(tree: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == "_meta":
                continue
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        out[prefix[:-1]] = float(tree)
    return out


def lookup(flat: dict[str, float], pattern: str) -> dict[str, float]:
    """The entries of a flattened results.json matching a metric path (``*`` = any one key), by the part
    that ``*`` matched (or the path itself when it has none)."""
    if "*" not in pattern:
        return {pattern: flat[pattern]} if pattern in flat else {}
    parts = pattern.split(".")
    star = parts.index("*")
    out = {}
    for key, value in flat.items():
        if key.count(".") == pattern.count(".") and fnmatch.fnmatchcase(key, pattern.replace("*", "[!.]*")):
            out[key.split(".")[star]] = value
    return out


def _cell_metrics(cell: Cell) -> dict[str, float] | None:
    path = cell.dir / "results.json"
    if not path.is_file():
        return None
    return _flatten(json.loads(path.read_text()))


def aggregate(study: Study, all_cells: list[Cell], bootstrap: bool = False) -> dict[str, Any]:
    """``study.json``'s content: per run ``{metric: interval}`` over the finished seeds, tables, claims."""
    per_run: dict[str, dict[int, dict[str, float]]] = {r: {} for r in study.runs}
    for cell in all_cells:
        metrics = _cell_metrics(cell) if cell.done else None
        if metrics is not None:
            per_run[cell.run][cell.seed] = metrics

    def seeds_of(run: str, metric: str) -> dict[int, float]:
        return {k: m[metric] for k, m in per_run[run].items() if metric in m}

    def interval(run: str, metric: str) -> dict[str, Any]:
        values = seeds_of(run, metric)
        out = mean_interval(list(values.values()))
        out["seeds"] = sorted(values)
        if bootstrap and out["n"] > 1:
            out["bootstrap_low"], out["bootstrap_high"] = bootstrap_interval(out["values"])
        return out

    runs = {}
    for run in study.runs:
        names = sorted({k for m in per_run[run].values() for k in m})
        runs[run] = {"seeds": sorted(per_run[run]), "metrics": {n: interval(run, n) for n in names}}
    tables = []
    for t in study.tables:
        columns: dict[str, str] = {}
        for label, pattern in t.columns.items():
            matched = set()
            for run in [*t.rows, *([t.floor] if t.floor else [])]:
                for m in per_run[run].values():
                    matched |= set(lookup(m, pattern))
            for part in sorted(matched):
                path = pattern.replace("*", part) if "*" in pattern else pattern
                columns[(f"{label} {part}".strip() if "*" in pattern else label) or part] = path
        rows = {run: {c: interval(run, p) for c, p in columns.items()} for run in t.rows}
        if t.floor:
            rows[f"{t.floor} floor"] = {
                c: interval(t.floor, p.replace(".model.", ".random.", 1)) for c, p in columns.items()
            }
        tables.append({"title": t.title, "columns": columns, "rows": rows})
    claims = []
    for c in study.claims:
        (ra, ma), (rb, mb) = c.a, c.b
        result = verdict(seeds_of(ra, ma), seeds_of(rb, mb))
        claims.append({"claim": c.claim, "source": c.source, "a": f"{ra}/{ma}", "b": f"{rb}/{mb}", **result})
    done = sum(cell.done for cell in all_cells)
    return {
        "study": study.name,
        "cells": len(all_cells),
        "finished": done,
        "seeds": study.seeds,
        "runs": runs,
        "tables": tables,
        "claims": claims,
    }


def _cell(entry: dict[str, Any]) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    half = entry.get("half_width")
    if half is None or not math.isfinite(half):
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ± {half:.2f}"


def markdown(data: dict[str, Any]) -> str:
    """The study as Markdown: each table (mean ± 95% half-width over seeds), then the claims."""
    lines = [
        f"# Study {data['study']}",
        "",
        f"{data['finished']} of {data['cells']} cells finished; seeds {data['seeds']}; mean ± 95% CI half-width (t) over seeds.",
        "",
    ]
    for t in data["tables"]:
        cols = list(t["columns"])
        if not cols:
            lines += [f"## {t['title']}", "", "No finished cell has these metrics yet.", ""]
            continue
        lines += [
            f"## {t['title']}",
            "",
            "| run | " + " | ".join(cols) + " |",
            "| --- |" + " --- |" * len(cols),
        ]
        for run, cells in t["rows"].items():
            lines.append(f"| {run} | " + " | ".join(_cell(cells[c]) for c in cols) + " |")
        lines.append("")
    if data["claims"]:
        lines += [
            "## Claims",
            "",
            "| claim | source | difference (a − b) | 95% CI | seeds | verdict |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for c in data["claims"]:
            d = c["difference"]
            ci = "-" if d["n"] < 2 else f"[{d['ci_low']:.2f}, {d['ci_high']:.2f}]"
            mean = "-" if d["mean"] is None else f"{d['mean']:.2f}"
            lines.append(f"| {c['claim']} | {c['source']} | {mean} | {ci} | {d['n']} | {c['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def _bars(table: dict[str, Any]) -> bytes | None:
    """Grouped bars (one group per column, one bar per run) with the 95% intervals as error bars."""
    from invarlab.report import plots

    columns, rows = list(table["columns"]), table["rows"]
    if not columns or not rows:
        return None
    fig, axes = plots._grid(plots.WIDTH, 3.2, legend=list(rows), bottom=0.9)
    ax = axes[0][0]
    width = 0.8 / len(rows)
    for i, (run, color) in enumerate(zip(rows, plots._colors(list(rows)), strict=True)):
        means = [rows[run][c].get("mean") or 0.0 for c in columns]
        errs = [
            h if (h := rows[run][c].get("half_width")) is not None and math.isfinite(h) else 0.0
            for c in columns
        ]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
        ax.bar(xs, means, width, yerr=errs, capsize=2, label=run, color=color)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=20, ha="right", fontsize=8)
    plots._legend(fig, ax)
    return plots._png(fig)


def html(data: dict[str, Any]) -> str:
    """The study page in the report's style: each table with its bar chart and error bars, then the claims."""
    from invarlab.report import markup
    from invarlab.report import tables as tb

    sections, nav = [], []
    for i, t in enumerate(data["tables"]):
        cols = list(t["columns"])
        if not cols:
            body = [markup.hint("no finished cell has these metrics yet", None)]
            sections.append(markup.section(f"table-{i}", t["title"], body))
            nav.append((f"table-{i}", t["title"].split(" (")[0]))
            continue
        table = tb.Table(
            columns=cols, rows=[(r, [_cell(v[c]) for c in cols]) for r, v in t["rows"].items()], corner="run"
        )
        table.floor_rows = {r for r in t["rows"] if r.endswith(" floor")}
        body = [
            markup.table(table),
            markup.figure(_bars(t), "mean over seeds; error bars: 95% CI", "study bars"),
        ]
        sections.append(markup.section(f"table-{i}", t["title"], body))
        nav.append((f"table-{i}", t["title"].split(" (")[0]))
    if data["claims"]:
        rows = []
        for c in data["claims"]:
            d = c["difference"]
            ci = "-" if d["n"] < 2 else f"[{d['ci_low']:.2f}, {d['ci_high']:.2f}]"
            rows.append(
                (
                    c["claim"],
                    [
                        c["source"] or "-",
                        "-" if d["mean"] is None else f"{d['mean']:.2f}",
                        ci,
                        str(d["n"]),
                        c["verdict"],
                    ],
                )
            )
        claims = tb.Table(
            columns=["source", "a − b", "95% CI", "seeds", "verdict"], rows=rows, corner="claim"
        )
        sections.append(markup.section("claims", "Claims", [markup.table(claims)]))
        nav.append(("claims", "Claims"))
    header = f'<h1>invarlab study: {markup.esc(data["study"])}</h1><p class="sub">{data["finished"]} of {data["cells"]} cells finished; seeds {markup.esc(data["seeds"])}; mean ± 95% CI half-width over seeds</p>'
    return markup.page(f"invarlab study: {data['study']}", header, nav, sections, "")


def write_study(study: Study, all_cells: list[Cell], bootstrap: bool = False) -> Path:
    """Write ``study.json``, ``study.md`` and ``study.html`` into the study folder (each atomically)."""
    data = aggregate(study, all_cells, bootstrap)
    study.out.mkdir(parents=True, exist_ok=True)
    pages = (
        ("study.json", json.dumps(data, indent=1)),
        ("study.md", markdown(data)),
        ("study.html", html(data)),
    )
    for name, text in pages:
        atomic_write_text(study.out / name, text, "study page")
    return study.out / "study.html"
