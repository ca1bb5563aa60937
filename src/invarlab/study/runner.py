"""Running a study's cells: one ``invarlab run`` per (run, seed) into ``STUDY_DIR/<run>/seed<k>/``.

A cell is finished when its folder holds ``study-cell.json`` (written last, after the report), which records
the cell's command; a finished cell is skipped, a started one (a folder without it) is run again, and training
resumes from its newest checkpoint (``resume=auto``) while the rendered world and cached features are reused.
A finished cell whose recorded command differs from the study's (an edited grid) is an error, not silently
reused. ``jobs`` > 1 runs cells as parallel processes, each pinned to its share of the CPU cores.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from invarlab.atomic import atomic_write_text
from invarlab.errors import ConfigError
from invarlab.study.spec import Study

__all__ = ["DONE_FILE", "Cell", "cells", "pending_cells", "run_cells"]

log = logging.getLogger(__name__)

DONE_FILE = "study-cell.json"


@dataclass
class Cell:
    run: str
    seed: int
    dir: Path
    args: list[str]  # the arguments of `invarlab run`

    @property
    def done(self) -> bool:
        return (self.dir / DONE_FILE).is_file()

    def command(self) -> str:
        return shlex.join(["invarlab", "run", *self.args])


def cells(study: Study, scale: str | None = None) -> list[Cell]:
    """Every (run, seed) of ``study`` with its ``invarlab run`` arguments: the run's config, the study's and
    the run's overrides, the ``scale``'s (``--scale paper``), then the seed (training, evaluation and the
    floor's initialisation) and the cell's folder."""
    if scale is not None and scale not in study.scales:
        known = ", ".join(study.scales) or "none"
        raise ConfigError(f"{study.path}: no scale {scale!r} (scales: {known})")
    extra = study.scales.get(scale or "", {})
    out = []
    for run in study.runs.values():
        for seed in study.seeds:
            folder = study.out / run.name / f"seed{seed}"
            args = [
                run.config,
                *study.overrides,
                *run.overrides,
                *extra.get("all", []),
                *extra.get(run.name, []),
                f"train.seed={seed}",
                f"eval.seed={seed}",
                f"eval.random_seed={seed}",
                f"train.run_dir={folder}",
            ]
            out.append(Cell(run.name, seed, folder, args))
    return out


def _check_recorded(cell: Cell) -> None:
    recorded = json.loads((cell.dir / DONE_FILE).read_text()).get("args")
    if recorded != cell.args:
        raise ConfigError(
            f"{cell.dir} was run as `invarlab run {shlex.join(recorded or [])}`, but the study now asks for "
            f"`{cell.command()}`: delete the folder to rerun it, or give the changed run another name"
        )


def _finish(cell: Cell, seconds: float) -> None:
    record = json.dumps({"args": cell.args, "seconds": round(seconds, 1)}, indent=1)
    atomic_write_text(cell.dir / DONE_FILE, record, "study cell record")


def _run_here(cell: Cell) -> None:
    from invarlab.cli_eval import load_run_config
    from invarlab.pipeline import run_pipeline

    run_pipeline(load_run_config(list(cell.args), None))


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def run_cells(todo: list[Cell], jobs: int = 1) -> None:
    """Run ``todo`` (unfinished cells), ``jobs`` at a time; a failing cell stops the study with its log."""
    for cell in todo:
        cell.dir.mkdir(parents=True, exist_ok=True)
    if jobs <= 1:
        for i, cell in enumerate(todo, 1):
            log.info("cell %d/%d: %s seed %d: %s", i, len(todo), cell.run, cell.seed, cell.command())
            start = time.perf_counter()
            _run_here(cell)
            _finish(cell, time.perf_counter() - start)
        return
    cores = _cores()
    share = max(1, len(cores) // jobs)
    slots = [cores[i * share : (i + 1) * share] or cores for i in range(jobs)]
    pending = list(todo)
    running: dict[int, tuple[subprocess.Popen, Cell, float, object]] = {}
    while pending or running:
        for slot in range(jobs):
            if slot in running or not pending:
                continue
            cell = pending.pop(0)
            env = dict(os.environ, OMP_NUM_THREADS=str(len(slots[slot])))
            logf = open(cell.dir / "study.log", "w")  # noqa: SIM115  (closed when the process ends)
            pin = slots[slot]
            proc = subprocess.Popen(
                [sys.executable, "-m", "invarlab.cli", "run", *cell.args],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=(lambda c=pin: os.sched_setaffinity(0, c))
                if hasattr(os, "sched_setaffinity")
                else None,
            )
            log.info("cell %s seed %d on cores %s: %s", cell.run, cell.seed, slots[slot], cell.command())
            running[slot] = (proc, cell, time.perf_counter(), logf)
        time.sleep(0.5)
        for slot, (proc, cell, start, logf) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()  # type: ignore[attr-defined]
            del running[slot]
            if proc.returncode != 0:
                for other, *_ in running.values():
                    other.terminate()
                tail = (cell.dir / "study.log").read_text().splitlines()[-5:]
                raise ConfigError(
                    f"cell {cell.run} seed {cell.seed} failed (exit {proc.returncode}); its log "
                    f"{cell.dir / 'study.log'} ends:\n" + "\n".join(tail)
                )
            _finish(cell, time.perf_counter() - start)


def pending_cells(all_cells: list[Cell]) -> list[Cell]:
    """The cells not finished yet; a finished cell's recorded command must match the study's."""
    todo = []
    for cell in all_cells:
        if cell.done:
            _check_recorded(cell)
        else:
            todo.append(cell)
    return todo
