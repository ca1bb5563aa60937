"""``invarlab study STUDY``: train and evaluate a grid of runs x seeds, then aggregate it (tables with 95%
confidence intervals and the papers' claims checked) into ``STUDY_DIR/study.{json,md,html}``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

__all__ = ["study_command"]


def study_command(
    study: str = typer.Argument(..., help="a study file, or a preset of configs/studies (tiny, p1, p2, p3)"),
    out: Path | None = typer.Option(None, "--out", help="study folder (default: the study's `out`)"),
    jobs: int = typer.Option(
        1, "--jobs", min=1, help="cells run at once, each pinned to its share of the cores"
    ),
    print_commands: bool = typer.Option(
        False,
        "--print-commands",
        help="print one `invarlab run` line per unfinished cell and stop (for a scheduler)",
    ),
    aggregate_only: bool = typer.Option(
        False, "--aggregate", help="only aggregate the finished cells (no training)"
    ),
    scale: str | None = typer.Option(
        None, "--scale", help="a scale the study defines, e.g. paper (GPU settings)"
    ),
    bootstrap: bool = typer.Option(
        False, "--bootstrap", help="also a percentile bootstrap interval over seeds"
    ),
) -> None:
    """Run every unfinished cell of a study (finished ones are skipped, interrupted ones resumed), then write
    its tables, claims and page."""
    from invarlab.study.aggregate import write_study
    from invarlab.study.runner import cells, pending_cells, run_cells
    from invarlab.study.spec import load_study

    spec = load_study(study, out)
    grid = cells(spec, scale)
    todo = pending_cells(grid)
    if print_commands:
        for cell in todo:
            typer.echo(cell.command())
        return
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    log = logging.getLogger("invarlab.study")
    log.info(
        "study %s: %d cells, %d finished, %d to run", spec.name, len(grid), len(grid) - len(todo), len(todo)
    )
    if not aggregate_only:
        run_cells(todo, jobs)
    page = write_study(spec, grid, bootstrap)
    typer.echo(f"study: {page}")
