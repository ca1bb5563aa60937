"""A study file (``configs/studies/NAME.yaml``) read into :class:`Study`, every key checked with an error that
names it.

::

    name: p1
    out: studies/p1                 # STUDY_DIR (--out overrides it)
    seeds: [0, 1, 2]                # or a count: 3
    overrides: [eval.evaluations=[knn,invariance]]   # applied to every run
    runs:
      moco: {config: configs/p1/moco_v2.yaml, overrides: [train.steps=600]}
      supervised: {config: configs/p1/supervised.yaml}
    tables:
      - title: Top-25 RIS per invariance (P1 Table 1)
        metric: invariance.model.*.top25            # one column per match of *
        rows: [moco, supervised]                    # default: every run
      - title: Classification
        columns: {kNN: knn.model.top1, linear: linear.model.top1}
        floor: moco                                 # adds moco's random-init floor as a row
    claims:
      - claim: "occlusion RIS: MoCo > supervised"
        a: moco/invariance.model.occlusion.top25    # run/metric: claimed larger
        b: supervised/invariance.model.occlusion.top25
        source: P1 Table 1
    scale:                                          # --scale paper: overrides per run for a GPU cluster
      paper: {moco: [train.method.backbone=resnet50, ...]}

A metric is a dotted path into a cell's ``results.json`` (evaluation, representation, metric ...); ``*``
matches any one key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invarlab.config import resolve_preset
from invarlab.errors import ConfigError

__all__ = ["Claim", "Study", "StudyRun", "StudyTable", "find_study", "load_study"]


@dataclass
class StudyRun:
    """One row of the grid: a run config (``configs/NAME.yaml`` or a file) and its overrides."""

    name: str
    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class StudyTable:
    """A table of the study page: rows are runs (and optionally one run's floor), columns metrics."""

    title: str
    columns: dict[str, str]  # label -> metric path (may hold one *)
    rows: list[str]
    floor: str | None = None


@dataclass
class Claim:
    """A paper's claim as a comparison: ``a`` (``run/metric``) is larger than ``b``."""

    claim: str
    a: tuple[str, str]
    b: tuple[str, str]
    source: str = ""


@dataclass
class Study:
    name: str
    path: Path
    out: Path
    seeds: list[int]
    runs: dict[str, StudyRun]
    overrides: list[str] = field(default_factory=list)
    tables: list[StudyTable] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    scales: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def find_study(name: str | os.PathLike[str]) -> Path:
    """A study file: a path, or a preset name in ``configs/studies``."""
    return resolve_preset(str(name) if not isinstance(name, Path) else name, "studies")


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of key=value strings, got {value!r}")
    return list(value)


def _metric_ref(value: Any, where: str, runs: dict[str, StudyRun]) -> tuple[str, str]:
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(f"{where}: expected 'run/metric.path', got {value!r}")
    run, metric = value.split("/", 1)
    if run not in runs:
        raise ConfigError(f"{where}: unknown run {run!r}; the study's runs are {', '.join(runs)}")
    if "*" in metric:
        raise ConfigError(f"{where}: a claim compares one number, so its metric cannot hold '*': {metric}")
    return run, metric


def load_study(name: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Study:
    """Read and check a study file (module docstring); ``out`` overrides its ``out``."""
    path = find_study(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with runs, seeds, tables and claims")
    unknown = set(data) - {"name", "out", "seeds", "overrides", "runs", "tables", "claims", "scale"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    seeds = data.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be a count >= 1 or a list of seeds >= 0, got {seeds!r}")
    raw_runs = data.get("runs")
    if not isinstance(raw_runs, dict) or not raw_runs:
        raise ConfigError(f"{path}: runs must map run names to {{config: ..., overrides: [...]}}")
    runs = {}
    for run_name, spec in raw_runs.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), str):
            raise ConfigError(f"{path}: runs.{run_name} needs config: a run preset or YAML file")
        extra = set(spec) - {"config", "overrides"}
        if extra:
            raise ConfigError(f"{path}: runs.{run_name}: unknown key(s) {', '.join(sorted(extra))}")
        if "/" in str(run_name) or str(run_name).startswith("."):
            raise ConfigError(f"{path}: run name {run_name!r} must be a plain folder name")
        runs[str(run_name)] = StudyRun(
            str(run_name),
            spec["config"],
            _strings(spec.get("overrides"), f"{path}: runs.{run_name}.overrides"),
        )
    tables = []
    for i, t in enumerate(data.get("tables") or []):
        where = f"{path}: tables[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("title"), str):
            raise ConfigError(f"{where} needs a title")
        if ("metric" in t) == ("columns" in t):
            raise ConfigError(f"{where}: give either metric (a path with *) or columns (label: path)")
        columns = {"": t["metric"]} if "metric" in t else t["columns"]
        if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
            raise ConfigError(f"{where}: columns must map labels to metric paths")
        rows = t.get("rows") or list(runs)
        bad = [r for r in [*rows, *([t["floor"]] if t.get("floor") else [])] if r not in runs]
        if bad:
            raise ConfigError(f"{where}: unknown run(s) {', '.join(map(str, bad))}; runs: {', '.join(runs)}")
        tables.append(StudyTable(t["title"], dict(columns), list(rows), t.get("floor")))
    claims = []
    for i, c in enumerate(data.get("claims") or []):
        where = f"{path}: claims[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("claim"), str):
            raise ConfigError(f"{where} needs claim: its wording")
        claims.append(
            Claim(
                c["claim"],
                _metric_ref(c.get("a"), f"{where}.a", runs),
                _metric_ref(c.get("b"), f"{where}.b", runs),
                str(c.get("source", "")),
            )
        )
    scales = {}
    for scale, per_run in (data.get("scale") or {}).items():
        if not isinstance(per_run, dict) or not set(per_run) <= set(runs) | {"all"}:
            raise ConfigError(f"{path}: scale.{scale} must map run names (or all) to override lists")
        scales[str(scale)] = {r: _strings(v, f"{path}: scale.{scale}.{r}") for r, v in per_run.items()}
    out_dir = (
        Path(out) if out is not None else Path(data.get("out") or f"studies/{data.get('name') or path.stem}")
    )
    return Study(
        name=str(data.get("name") or path.stem),
        path=path,
        out=out_dir,
        seeds=list(seeds),
        runs=runs,
        overrides=_strings(data.get("overrides"), f"{path}: overrides"),
        tables=tables,
        claims=claims,
        scales=scales,
    )
