"""``invarlab run``: one command from nothing to a report - render the world, train, evaluate, report.

A run config (``configs/quickstart.yaml``) has a ``train`` section (a :class:`~invarlab.train.config.TrainConfig`)
and an ``eval`` section (an :class:`~invarlab.eval.config.EvalConfig`). Each stage reads only what the one
before it wrote into the run folder, so a stage can be re-run alone (``invarlab eval all RUN``, ``invarlab
report RUN``), and re-running ``invarlab run`` resumes training from its last checkpoint and reuses cached
renders and features.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invarlab.config import opt
from invarlab.eval.config import EvalConfig
from invarlab.train.config import TrainConfig

__all__ = ["RunConfig", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Train, evaluate and report in one go; ``train.run_dir`` is where everything goes."""

    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: bool = opt(True, "write RUN/report.html at the end")


def run_pipeline(cfg: RunConfig) -> Path:
    """Run every stage; returns the report's path (or the run folder when ``report`` is off)."""
    from invarlab.eval.context import EvalContext
    from invarlab.eval.suite import run_evaluations
    from invarlab.train.api import train

    timings = {}
    eval_cfg, classify_sets = _eval_setup(cfg)
    start = time.perf_counter()
    result = train(cfg.train, classify_sets)  # the sets evaluation reuses: built once
    timings["train"] = time.perf_counter() - start
    run_dir = Path(result.run_dir)

    start = time.perf_counter()
    run_evaluations(EvalContext(run_dir, eval_cfg, classify_sets=classify_sets))
    timings["eval"] = time.perf_counter() - start
    out = run_dir
    if cfg.report:
        from invarlab.report import write_report

        start = time.perf_counter()
        out = write_report(run_dir)
        timings["report"] = time.perf_counter() - start
    log.info("stages: %s", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return out


def _eval_setup(cfg: RunConfig) -> tuple[EvalConfig, tuple[Any, Any] | None]:
    """The evaluation config and classification sets of a run. A run trained on a folder (or on CIFAR /
    STL-10) is evaluated on that data: its training images as the bank / probe training set, its monitor images
    (``data.monitor_root`` or the held-out split; CIFAR's / STL-10's test split) as the test set, results
    under ``<evaluation>_<source>``; the evaluations that need the world (invariance, factor probes, scene
    SVM) are left out, and the report says so. Checked before training, so a folder without a labelled test
    set fails at once."""
    data = cfg.train.data
    from invarlab.data.classification import ARRAY_SOURCES

    if data.source not in ("folder", *ARRAY_SOURCES) or cfg.eval.classify.dataset != "world":
        return cfg.eval, None
    from invarlab.errors import ConfigError
    from invarlab.eval.classify_config import CLASSIFY_EVALUATIONS
    from invarlab.train.api import build_datasets

    train_set, test_set = build_datasets(data, cfg.train.seed)
    if test_set is None:
        raise ConfigError(
            "invarlab run on a folder evaluates on held-out labelled images: set train.data.monitor_root=PATH "
            "(a folder with the training folder's class names) or train.data.held_out_fraction=0.1"
        )
    if data.source == "folder":
        where = {"train_root": data.root, "test_root": data.monitor_root or "held-out split"}
    else:
        where = {"root": data.root}
    classify = dataclasses.replace(cfg.eval.classify, dataset=data.source, **where)
    kept = [e for e in cfg.eval.evaluations if e in CLASSIFY_EVALUATIONS]
    skipped = [e for e in cfg.eval.evaluations if e not in CLASSIFY_EVALUATIONS]
    if skipped:
        log.info("not evaluated (they need the world): %s", ", ".join(skipped))
    return dataclasses.replace(cfg.eval, classify=classify, evaluations=kept), (train_set, test_set)
