"""What a run reports, written by rank 0 only: ``metrics.jsonl``, TensorBoard events, a rich progress bar.

``metrics.jsonl`` has one JSON object per line, ``{"step": s, "epoch": e, "time": t, "<tag>/<name>": value}``,
where ``step`` counts completed optimiser steps (1-based; a checkpoint of step ``s`` holds the state after
them; the kNN monitor's ``knn.at_start`` record has step 0, the network before any step). On resume from step
``s`` the lines and events of steps ``> s`` (written by the interrupted run after its last checkpoint) are
dropped, so the logs read as one uninterrupted run; a fresh start (step 0) drops every line, the step-0 ones of
an attempt that died before its first checkpoint included.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["METRICS_FILE", "RunLogger", "read_metrics"]

log = logging.getLogger("invarlab.train")
METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl`` (a torn last line, from a crash mid-write, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_after(path: Path, step: int) -> None:
    """Keep only records with ``step <= step``, rewritten atomically."""
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path.parent) if r.get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    # JSON has no NaN / Infinity; write them as strings so every line stays parseable by strict readers.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Rank 0's writer of metrics, events and progress; on other ranks every method does nothing."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        total_steps: int,
        start_step: int = 0,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps
        self.start_time = time.time()
        self.writer = None
        self.progress: Progress | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_after(self.run_dir / METRICS_FILE, start_step if start_step > 0 else -1)
        self._file = open(self.run_dir / METRICS_FILE, "a")  # noqa: SIM115  (held open for the run)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in tensorboard

            # purge_step drops events at steps >= start_step + 1 left by the run being resumed.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=start_step + 1 if start_step else None)
        console = Console(stderr=True)
        if progress and console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self.progress.add_task(
                "train", total=total_steps, completed=start_step, loss="-", lr="-", ips="-"
            )
            self.progress.start()

    def write(self, step: int, epoch: int, values: dict[str, float], tag: str = "train") -> None:
        """One metrics.jsonl record and one TensorBoard scalar per value, as ``<tag>/<name>``."""
        if not self.enabled:
            return
        record: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "time": round(time.time() - self.start_time, 3),
        }
        record.update({f"{tag}/{k}": _clean(float(v)) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{tag}/{k}", float(v), step)
        if self.progress is None:
            text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            log.info("step %d/%d  %s  %s", step, self.total_steps, tag, text)

    def advance(
        self, step: int, loss: float | None = None, lr: float | None = None, ips: float | None = None
    ) -> None:
        """Move the progress bar to ``step``; the other fields update when given."""
        if self.progress is None:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if lr is not None:
            fields["lr"] = f"{lr:.3g}"
        if ips is not None:
            fields["ips"] = f"{ips:.0f}"
        self.progress.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if not self._file.closed:
            self._file.close()
