"""The ``invarlab`` command line: one sub-command per stage (``world``, ``train``, ``export``, ``eval``,
``report``, ``compare``) and ``run``, which chains them.

Commands take a preset (a name under ``configs/<group>/`` or a YAML file) and ``key=value`` overrides, and
print every option with its default and allowed values in ``--help``, so a user never has to read the source
to find a knob. :func:`main` turns any :class:`~invarlab.errors.UserError` into one red ``error:`` line and
exit status 2: a user who mistyped a key needs the fix, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from invarlab import __version__
from invarlab.config import describe, load_config
from invarlab.config_schema import format_value
from invarlab.errors import ConfigError, UserError
from invarlab.world.config import WorldPreset

__all__ = ["app", "load_train_config", "load_world_preset", "main", "options_epilog", "world_app"]

app = typer.Typer(
    name="invarlab",
    help="Contrastive self-supervised representations and what they are invariant to.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
world_app = typer.Typer(
    help="The controlled synthetic world: render datasets into the cache, or look at them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(world_app, name="world")


def options_epilog(schema: type, title: str = "Preset options") -> str:
    """Every option of ``schema`` as ``key = default (allowed)  help``, escaped for rich markup.

    Typer prints epilogs through rich, which would swallow ``[lo, hi]`` as a markup tag without the escape.
    """
    lines = [f"{title} (set any with key=value; <name> is a dataset name):", ""]
    for o in describe(schema):
        allowed = f" ({o.allowed})" if o.allowed else ""
        lines.append(f"{o.key} = {format_value(o.default)}{allowed}  {o.help}")
    return escape("\n".join(lines))


_WORLD_EPILOG = options_epilog(WorldPreset)
_ARGS_HELP = "a preset name (configs/world/NAME.yaml) or YAML file, then key=value overrides"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"invarlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Contrastive self-supervised representations and what they are invariant to."""


def load_world_preset(args: list[str] | None, config: Path | None) -> WorldPreset:
    """``[PRESET] [key=value ...]`` or ``--config FILE [key=value ...]``; neither means preset ``default``.

    The first argument is the preset unless it contains ``=``, so ``--config`` can be followed directly by
    overrides. Giving both a preset and ``--config`` is an error rather than a silent choice of one.
    """
    preset, overrides = _preset_and_overrides(args, config)
    return load_config(WorldPreset, preset if preset is not None else "default", overrides, group="world")


def _preset_and_overrides(args: list[str] | None, config: Path | None) -> tuple[str | Path | None, list[str]]:
    """Split ``[PRESET] [key=value ...]`` and ``--config FILE`` into the preset (or file) and the overrides."""
    args = list(args or [])
    preset: str | Path | None = args.pop(0) if args and "=" not in args[0] else None
    if config is not None:
        if preset is not None:
            raise ConfigError(f"give a preset or --config, not both (got '{preset}' and --config {config})")
        preset = config
    return preset, args


def _world_api() -> Any:
    # Imported when a command runs (not at start-up), so `--help` and config errors stay fast; import_module
    # reads sys.modules first, which is also how tests substitute the renderer.
    return importlib.import_module("invarlab.world.api")


_ARGS = typer.Argument(None, metavar="PRESET KEY=VALUE", help=_ARGS_HELP, show_default=False)
_CONFIG = typer.Option(
    None, "--config", "-c", help="YAML config file, instead of PRESET.", show_default=False
)


def _render_row(result: Any, start: float) -> tuple[Path, bool, int | None]:
    """(cache path, cache hit, image count) of one ``render_preset`` result.

    The result is a path, or an object with ``path`` and optionally ``hit`` and ``dataset`` (sized). Without
    ``hit``, an entry written before the command started counts as a hit; the 1 s margin covers file systems
    whose timestamps come from a coarse clock lagging ``time.time()``.
    """
    path = Path(getattr(result, "path", result))
    hit = getattr(result, "hit", None)
    if hit is None:
        hit = path.exists() and path.stat().st_mtime < start - 1.0
    dataset = getattr(result, "dataset", None)
    return path, bool(hit), len(dataset) if hasattr(dataset, "__len__") else None


@world_app.command(epilog=_WORLD_EPILOG)
def render(args: list[str] | None = _ARGS, config: Path | None = _CONFIG) -> None:
    """Render the datasets of a world preset into the cache; datasets already cached are reused."""
    preset = load_world_preset(args, config)
    start = time.time()
    results = _world_api().render_preset(preset)
    table = Table(title="rendered datasets")
    for column in ("dataset", "images", "cache", "status"):
        table.add_column(column, overflow="fold")
    for name, result in results.items():
        path, hit, count = _render_row(result, start)
        spec = preset.datasets.get(name)
        count = count if count is not None else (spec.num_images if spec else "?")
        table.add_row(name, str(count), str(path), "hit" if hit else "miss")
    Console().print(table)


@world_app.command(epilog=_WORLD_EPILOG)
def show(
    args: list[str] | None = _ARGS,
    config: Path | None = _CONFIG,
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder the PNG images are written to."),
) -> None:
    """Render a few images of every dataset of a world preset as PNG contact sheets in --out."""
    preset = load_world_preset(args, config)
    for path in _world_api().show_preset(preset, out):
        typer.echo(str(path))


# ------------------------------------------------------------------------------------------- train / export
def _train_schema() -> type:
    # Imported when needed: the training config pulls in the methods package.
    return importlib.import_module("invarlab.train.config").TrainConfig


def load_train_config(args: list[str] | None, config: Path | None) -> Any:
    """``[PRESET] [key=value ...]`` or ``--config FILE [key=value ...]``; neither means preset ``quickstart``
    (same rules as :func:`load_world_preset`)."""
    preset, overrides = _preset_and_overrides(args, config)
    return load_config(
        _train_schema(), preset if preset is not None else "quickstart", overrides, group="train"
    )


class _TrainCommand(typer.core.TyperCommand):
    """Builds its epilog (every training option) only when help is shown: the schema imports torch and the
    methods, which would add seconds to every other command's start-up."""

    @property
    def epilog(self) -> str:  # type: ignore[override]
        return options_epilog(_train_schema(), "Training options")

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass


@app.command("train", cls=_TrainCommand)
def train_command(
    args: list[str] | None = typer.Argument(
        None,
        metavar="PRESET KEY=VALUE",
        help="a preset name (configs/train/NAME.yaml) or YAML file, then key=value overrides",
        show_default=False,
    ),
    config: Path | None = _CONFIG,
) -> None:
    """Train a method; resumes from the run directory's newest checkpoint (resume=auto). Under torchrun,
    every process runs this command (gloo on CPU, nccl on GPU)."""
    import logging

    cfg = load_train_config(args, config)
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        level = logging.INFO if rank0 else logging.WARNING
        logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)])
    result = importlib.import_module("invarlab.train.api").train(cfg)
    if rank0:
        knn = f", kNN top-1 {result.knn_top1:.1f}%" if result.knn_top1 is not None else ""
        typer.echo(f"run {result.run_dir}: step {result.step}{knn}; checkpoint {result.checkpoint}")


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="run directory (its newest checkpoint) or a checkpoint file"),
    format: str = typer.Option("torchvision", "--format", "-f", help="output layout: torchvision"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output file; default RUN/export/<arch>_torchvision_<checkpoint>.pt"
    ),
) -> None:
    """Write a run's backbone as a state dict that torchvision.models.<arch>() loads with strict=True."""
    from invarlab.errors import CheckpointError
    from invarlab.nets import build_backbone, export_torchvision_state_dict, load_checkpoint, read_checkpoint
    from invarlab.train.checkpoint import atomic_save, find_latest

    if format != "torchvision":
        raise ConfigError(f"unknown export format '{format}'; available: torchvision")
    path = run if run.is_file() else find_latest(run)
    if path is None:
        raise CheckpointError(
            f"{run}: no checkpoint there (expected a file or a run directory with checkpoints/)"
        )
    ckpt = read_checkpoint(path)
    arch = ckpt.get("arch") if isinstance(ckpt, dict) else None
    if not isinstance(arch, dict) or not arch.get("name"):
        raise ConfigError(
            f"{path}: its backbone is not an invarlab ResNet, so it has no torchvision counterpart"
        )
    model = build_backbone(**arch)
    load_checkpoint(ckpt, model)
    state = export_torchvision_state_dict(model)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = out or run_dir / "export" / f"{arch['name']}_torchvision_{path.stem}.pt"
    atomic_save(state, out)
    typer.echo(str(out))


# ------------------------------------------------------------------------------------------- report / compare
@app.command("report")
def report_command(
    run: Path = typer.Argument(..., help="run directory (holding config.yaml, metrics.jsonl, results.json)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output file; default RUN/report.html"),
) -> None:
    """Write one self-contained HTML report of a run: config, training curves, every evaluation, figures."""
    from invarlab.report import write_report

    typer.echo(f"report: {write_report(run, out)}")


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(..., help="two or more run directories", show_default=False),
    out: Path = typer.Option(Path("compare.html"), "--out", "-o", help="output file"),
) -> None:
    """Write an HTML page comparing runs side by side: one row per run, the first run's random floor."""
    from invarlab.report import compare_runs

    if len(runs) < 2:
        raise ConfigError(f"compare needs at least two run directories, got {len(runs)}")
    typer.echo(f"comparison: {compare_runs(runs, out)}")


# ------------------------------------------------------------------------------------------- eval / run
from invarlab.cli_eval import eval_app, run_command  # noqa: E402  (after app: the sub-app registers on it)
from invarlab.cli_study import study_command  # noqa: E402

app.add_typer(eval_app, name="eval")
app.command("run")(run_command)
app.command("study")(study_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; a UserError becomes ``error: <message>`` on stderr and exit 2."""
    try:
        app(args=argv, prog_name="invarlab")
    except UserError as e:
        Console(stderr=True, soft_wrap=True).print(Text(f"error: {e}", style="red"))
        sys.exit(2)


if __name__ == "__main__":
    main()
