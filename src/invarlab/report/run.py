"""Everything a report shows about one run folder, read once: config text, metrics, results and figures.

Reading is strict only where a user must act (no such folder, a corrupt ``results.json``: a
:class:`~invarlab.errors.DataError` naming the file and the fix); anything merely absent or oddly shaped is
kept as empty so that the report shows "not evaluated" rather than failing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invarlab.errors import DataError
from invarlab.results import RESULTS_FILE, load_results

__all__ = ["PNG_MAGIC", "RunData", "flatten", "load_run", "number"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG_FILE = "config.yaml"
# The trainer's file (invarlab.train.log.METRICS_FILE), read here without importing the training package:
# it pulls in torch, seconds of start-up for a command that only reads text.
METRICS_FILE = "metrics.jsonl"


@dataclass
class RunData:
    """One run folder as the report sees it."""

    name: str
    path: Path
    config_text: str | None = None  # config.yaml verbatim (shown as written)
    config: dict[str, Any] = field(default_factory=dict)  # parsed, {} when missing or unparsable
    config_error: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # evaluations, without "_meta"
    meta: dict[str, Any] = field(default_factory=dict)  # results["_meta"]
    figures: dict[str, bytes] = field(default_factory=dict)  # figures/*.png by file name, sorted

    def section(self, evaluation: str) -> dict[str, dict[str, Any]]:
        """``results[evaluation]`` restricted to representations whose metrics are a dict."""
        data = self.results.get(evaluation)
        if not isinstance(data, dict):
            return {}
        return {str(rep): v for rep, v in data.items() if isinstance(v, dict)}


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run folder; raises :class:`DataError` when it is not one or its ``results.json`` is corrupt."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{path}: no such run folder (give the run_dir a training run wrote)")
    known = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, "checkpoints", "figures")
    if not any((path / name).exists() for name in known):
        raise DataError(
            f"{path}: not a run folder (it has none of {', '.join(known)}); give the run_dir of a training run"
        )
    run = RunData(name=path.resolve().name or str(path), path=path)
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        run.config_text = config_path.read_text(errors="replace")
        try:
            parsed = yaml.safe_load(run.config_text)
            run.config = parsed if isinstance(parsed, dict) else {}
        except yaml.YAMLError as err:
            run.config_error = f"{config_path} is not valid YAML: {err}"
    run.metrics = read_metrics(path / METRICS_FILE)
    try:
        results = load_results(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(str(err) if isinstance(err, ValueError) else f"{path / RESULTS_FILE}: {err}") from err
    meta = results.pop("_meta", {})
    run.meta = meta if isinstance(meta, dict) else {}
    run.results = results
    figures = path / "figures"
    if figures.is_dir():
        run.figures = {p.name: p.read_bytes() for p in sorted(figures.glob("*.png")) if p.is_file()}
    return run


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``metrics.jsonl``; torn or non-object lines (a crash mid-write) are skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def number(value: Any) -> float | None:
    """A metric as a float: numbers, and the strings results.json uses for non-finite values; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with ``a/b`` keys (lists stay values); a non-dict becomes ``{prefix: v}``."""
    if not isinstance(values, dict):
        return {prefix or "value": values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
