"""The report's charts, each returned as PNG bytes (``None`` when there is nothing to draw).

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas, never through
``pyplot``: no global figure state, no GUI backend, and a user's own backend choice is left alone. Inputs are
the same ``{row label: metrics}`` mappings as :mod:`invarlab.report.tables`, so a single run's
representations and a comparison's runs draw with the same code. Rows whose label starts with "random" (the
floor) are drawn in grey with hatching.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from invarlab.report.run import is_finite, number
from invarlab.report.tables import (
    FACTOR_LABELS,
    INVARIANCE_FACTORS,
    PROBE_FACTORS,
    corruption_rows,
    corruption_severities,
    fmt,
    probe_accuracy,
)

__all__ = [
    "corruption_curves",
    "invariance_bars",
    "invariance_radar",
    "monitor_chance",
    "probe_bars",
    "summary_bars",
    "train_extras",
    "training_curves",
    "training_figure",
]

Rows = dict[str, dict[str, Any] | None]
FLOOR_COLOR = "#9e9e9e"
WIDTH = 11.0  # inches at 100 dpi: the page's content width, so charts show at their pixel size
CURVES = (
    ("train/loss", "training loss", False),
    ("train/lr", "learning rate", False),
    ("knn/top1", "kNN monitor top-1", True),
)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _legend_room(labels: Sequence[str]) -> float:
    """Inches a fontsize-8 legend of ``labels`` needs beside the axes."""
    return 0.75 + 0.068 * max((len(label) for label in labels), default=0) if labels else 0.0


def _grid(
    width: float,
    height: float,
    nrows: int = 1,
    ncols: int = 1,
    *,
    legend: Sequence[str] = (),
    left: float = 0.65,
    bottom: float = 0.5,
    top: float = 0.35,
    wspace: float = 0.25,
    hspace: float = 0.45,
    **subplot_kw: Any,
) -> tuple[Any, Any]:
    """A figure with an ``nrows x ncols`` grid of axes, margins given in inches (room on the right for a
    legend of ``legend`` labels). Margins are set by hand: constrained layout re-measures every tick label
    and made small multiples 2-3x slower to draw."""
    fig = _figure(width, height)
    right = 0.2 + _legend_room(legend)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )
    return fig, fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)


def _legend(fig: Any, ax: Any, top: float = 0.35) -> None:
    """The legend of ``ax``'s artists at the figure's top right, in the room :func:`_grid` left."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        width, height = fig.get_size_inches()
        room = _legend_room(labels)
        fig.legend(
            handles, labels, loc="upper left", bbox_to_anchor=(1 - room / width, 1 - top / height), fontsize=8
        )


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def _colors(labels: Sequence[str]) -> list[str]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    out, i = [], 0
    for label in labels:
        if label.startswith("random"):
            out.append(FLOOR_COLOR)
        else:
            out.append(palette[i % len(palette)])
            i += 1
    return out


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(number(r.get("step")), number(r.get(key))) for r in records if key in r]
    pairs = [(s, v) for s, v in pairs if is_finite(s) and is_finite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def monitor_chance(records: list[dict[str, Any]]) -> float | None:
    """The kNN monitor's chance level (``knn/chance``, 100 / classes, as the trainer logs it) or None."""
    values = [v for r in records if is_finite(v := number(r.get("knn/chance")))]
    return values[-1] if values else None


def _reference_lines(ax: Any, floor: float | None, chance: float | None) -> None:
    """Dashed horizontal lines on the kNN panel, each named with its value in the panel's own legend."""
    lines = (
        ("random init (floor)", floor, FLOOR_COLOR),
        ("chance", chance, "black"),
    )
    for name, value, color in lines:
        if is_finite(value):
            ax.axhline(value, color=color, ls="--", lw=1.2, label=f"{name} {fmt(value)}%")
    handles, labels = ax.get_legend_handles_labels()
    refs = [
        (h, lbl) for h, lbl in zip(handles, labels, strict=True) if lbl.startswith(("random init", "chance"))
    ]
    if refs:
        ax.legend(*zip(*refs, strict=True), fontsize=7, loc="best")


def training_curves(
    runs: dict[str, list[dict[str, Any]]], floor: float | None = None, chance: float | None = None
) -> bytes | None:
    """Loss, learning rate and the online kNN monitor against step; one line per run, the monitor's points
    marked. ``floor`` (the random-init kNN top-1) and ``chance`` (percent), when known, are dashed lines on
    the monitor's panel."""
    fig = training_figure(runs, floor, chance)
    return None if fig is None else _png(fig)


def training_figure(
    runs: dict[str, list[dict[str, Any]]], floor: float | None = None, chance: float | None = None
) -> Any:
    """The matplotlib ``Figure`` of :func:`training_curves` (None when no run logged a curve)."""
    panels = [c for c in CURVES if any(_series(recs, c[0])[0] for recs in runs.values())]
    if not panels:
        return None
    legend = list(runs) if len(runs) > 1 else []
    fig, axes = _grid(
        min(WIDTH, 3.7 * len(panels) + _legend_room(legend)), 3.0, 1, len(panels), legend=legend, sharex=True
    )
    axes = axes[0]
    colors = _colors(list(runs))
    for ax, (key, title, markers) in zip(axes, panels, strict=True):
        for (label, records), color in zip(runs.items(), colors, strict=True):
            steps, values = _series(records, key)
            if steps:
                ax.plot(steps, values, color=color, label=label, marker="o" if markers else None, ms=4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "train/lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if key == "knn/top1":
            _reference_lines(ax, floor, chance)
    # A little room left of 0, so that the monitor's step-0 point is not cut in half by the axis.
    axes[0].set_xlim(left=-0.02 * max(axes[0].get_xlim()[1], 1.0))
    if legend:
        _legend(fig, axes[0])
    return fig


def train_extras(
    records: list[dict[str, Any]], skip: Sequence[str] = ("train/loss", "train/lr")
) -> bytes | None:
    """Small multiples of every other ``train/*`` scalar (throughput, positive-pair accuracy, ...)."""
    keys = list(dict.fromkeys(k for r in records for k in r if k.startswith("train/") and k not in skip))
    keys = [k for k in keys if _series(records, k)[0]]
    if not keys:
        return None
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = _grid(min(WIDTH, 2.75 * cols), 2.2 * nrows, nrows, cols, left=0.55, bottom=0.35, wspace=0.35)
    axes = axes.ravel()
    for ax, key in zip(axes, keys, strict=False):
        ax.plot(*_series(records, key), color="#1f77b4")
        ax.set_title(key.removeprefix("train/"), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    return _png(fig)


def _factors(rows: Rows, preferred: Sequence[str]) -> list[str]:
    keys = [k for m in rows.values() if m for k, v in m.items() if isinstance(v, dict)]
    keys = list(dict.fromkeys(keys))
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


def _grouped(ax: Any, groups: list[str], rows: Rows, value: Any, colors: list[str]) -> list[float]:
    """Bars: one group per entry of ``groups``, one bar per row; returns the group centres."""
    n = max(len(rows), 1)
    width = 0.8 / n
    centres = list(range(len(groups)))
    for i, ((label, metrics), color) in enumerate(zip(rows.items(), colors, strict=True)):
        heights = [number(value(metrics or {}, g)) for g in groups]
        xs = [c - 0.4 + width * (i + 0.5) for c in centres]
        ys = [h if is_finite(h) else 0.0 for h in heights]
        hatch = "//" if label.startswith("random") else None
        ax.bar(xs, ys, width=width * 0.95, color=color, label=label, hatch=hatch, edgecolor="white", lw=0)
    ax.set_xticks(centres)
    ax.set_xticklabels([FACTOR_LABELS.get(g, g) for g in groups], rotation=20, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return centres


def _entry(metrics: dict[str, Any], factor: str) -> dict[str, Any]:
    entry = metrics.get(factor)
    return entry if isinstance(entry, dict) else {}


def invariance_bars(rows: Rows) -> bytes | None:
    """P1's Top-10 and Top-25 RIS as grouped bars, one panel above the other: factor groups, one bar per
    representation (or run)."""
    factors = _factors(rows, INVARIANCE_FACTORS)
    if not factors:
        return None
    fig, axes = _grid(WIDTH, 5.6, 2, 1, legend=list(rows), bottom=0.85, hspace=0.25, sharex=True, sharey=True)
    axes = axes[:, 0]
    colors = _colors(list(rows))
    for ax, k in zip(axes, ("top10", "top25"), strict=True):
        _grouped(ax, factors, rows, lambda m, f, k=k: _entry(m, f).get(k), colors)
        ax.set_title(f"Top-{k[3:]} RIS", fontsize=10)
        ax.set_ylabel("RIS")
    _legend(fig, axes[0])
    return _png(fig)


def invariance_radar(rows: Rows, k: str = "top25") -> bytes | None:
    """The Top-K RIS profile of every row on one polar chart (needs at least three factors)."""
    factors = _factors(rows, INVARIANCE_FACTORS)
    if len(factors) < 3:
        return None
    # Fixed placement, with room for the outer labels and the legend.
    fig = _figure(7.0, 4.8)
    ax = fig.add_axes((0.1, 0.1, 0.52, 0.78), projection="polar")
    angles = [2 * math.pi * i / len(factors) for i in range(len(factors))]
    for (label, metrics), color in zip(rows.items(), _colors(list(rows)), strict=True):
        values = [number(_entry(metrics or {}, f).get(k)) for f in factors]
        values = [v if is_finite(v) else 0.0 for v in values]
        style = "--" if label.startswith("random") else "-"
        ax.plot([*angles, angles[0]], [*values, values[0]], style, color=color, label=label, lw=1.6)
        ax.fill([*angles, angles[0]], [*values, values[0]], color=color, alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels([FACTOR_LABELS.get(f, f) for f in factors], fontsize=8)
    ax.tick_params(axis="x", pad=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylim(bottom=0)
    ax.set_title(f"Top-{k[3:]} RIS profile", fontsize=10, pad=14)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(0.7, 0.92), fontsize=8)
    return _png(fig)


def probe_bars(rows: Rows) -> bytes | None:
    """Factor-probe accuracy per factor and row, with each factor's chance level as a black tick."""
    factors = _factors(rows, PROBE_FACTORS)
    if not factors:
        return None
    fig, axes = _grid(WIDTH, 3.4, legend=[*rows, "chance"], bottom=0.85)
    ax = axes[0, 0]
    centres = _grouped(ax, factors, rows, lambda m, f: probe_accuracy(_entry(m, f)), _colors(list(rows)))
    for centre, factor in zip(centres, factors, strict=True):
        chances = [number(_entry(m or {}, factor).get("chance")) for m in rows.values()]
        chance = next((c for c in chances if is_finite(c)), None)
        if chance is not None:
            ax.hlines(chance, centre - 0.45, centre + 0.45, colors="black", lw=1.5, linestyles="--")
    ax.plot([], [], "k--", lw=1.5, label="chance")
    ax.set_ylabel("probe accuracy")
    ax.set_title("Linear probes of the factors", fontsize=10)
    _legend(fig, ax)
    return _png(fig)


def corruption_curves(rows: Rows) -> bytes | None:
    """Accuracy against severity: the mean over corruptions, then one panel per corruption; clean
    accuracy is drawn at severity 0."""
    per = {label: corruption_rows(m) for label, m in rows.items()}
    names = list(dict.fromkeys(n for p in per.values() for n in p))
    if not names:
        return None
    panels = ["mean", *names]
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    legend = list(rows)
    width = min(WIDTH, 2.4 * cols + 0.8 + _legend_room(legend))
    fig, axes = _grid(
        width, 2.2 * nrows + 0.3, nrows, cols, legend=legend, bottom=0.6, wspace=0.12, sharey=True
    )
    axes = axes.ravel()
    colors = _colors(list(rows))
    for ax, panel in zip(axes, panels, strict=False):
        for (label, metrics), color in zip(rows.items(), colors, strict=True):
            if panel == "mean":
                curves = [c for c in per[label].values() if c]
                width = max((len(c) for c in curves), default=0)
                accs = [_mean([c[i] for c in curves if i < len(c)]) for i in range(width)]
            else:
                accs = per[label].get(panel, [])
            clean = number((metrics or {}).get("clean"))
            severities = corruption_severities(metrics, len(accs))
            xs = [0, *severities] if is_finite(clean) else severities
            ys = [clean, *accs] if is_finite(clean) else accs
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if is_finite(y)]
            if pts:
                style = "--" if label.startswith("random") else "-"
                ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3, color=color, label=label)
        ax.set_title(panel.replace("_", " "), fontsize=9, fontweight="bold" if panel == "mean" else None)
        ax.set_xticks(range(6))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("accuracy")
    axes[0].set_xlabel("severity (0 = clean)", fontsize=8)
    _legend(fig, axes[0])
    return _png(fig)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if is_finite(v)]
    return sum(finite) / len(finite) if finite else None


def summary_bars(metrics: dict[str, Rows]) -> bytes | None:
    """Headline metrics side by side: ``{metric title: {row label: value}}`` as grouped bars, one panel
    per metric (their scales differ)."""
    panels = {t: r for t, r in metrics.items() if any(is_finite(number(v)) for v in r.values())}
    if not panels:
        return None
    fig, axes = _grid(min(WIDTH, 2.75 * len(panels)), 3.4, 1, len(panels), bottom=1.0, left=0.45, wspace=0.3)
    axes = axes[0]
    for ax, (title, rows) in zip(axes, panels.items(), strict=True):
        labels = list(rows)
        values = [number(v) for v in rows.values()]
        colors = _colors(labels)
        ax.bar(range(len(labels)), [v if is_finite(v) else 0.0 for v in values], color=colors)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    return _png(fig)
