"""``invarlab run``: one command from nothing to a report - render the world, train, evaluate, report.

A run config (``configs/quickstart.yaml``) has a ``train`` section (a :class:`~invarlab.train.config.TrainConfig`)
and an ``eval`` section (an :class:`~invarlab.eval.config.EvalConfig`). Each stage reads only what the one
before it wrote into the run folder, so a stage can be re-run alone (``invarlab eval all RUN``, ``invarlab
report RUN``), and re-running ``invarlab run`` resumes training from its last checkpoint and reuses cached
renders and features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    start = time.perf_counter()
    result = train(cfg.train)
    timings["train"] = time.perf_counter() - start
    run_dir = Path(result.run_dir)

    start = time.perf_counter()
    run_evaluations(EvalContext(run_dir, cfg.eval))
    timings["eval"] = time.perf_counter() - start
    out = run_dir
    if cfg.report:
        from invarlab.report import write_report

        start = time.perf_counter()
        out = write_report(run_dir)
        timings["report"] = time.perf_counter() - start
    log.info("stages: %s", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return out
