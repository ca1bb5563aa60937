"""The ``invarlab`` command line: one typer sub-app per stage (``world`` so far).

Commands take a preset (a name under ``configs/<group>/`` or a YAML file) and ``key=value`` overrides, and
print every option with its default and allowed values in ``--help``, so a user never has to read the source
to find a knob. :func:`main` turns any :class:`~invarlab.errors.UserError` into one red ``error:`` line and
exit status 2: a user who mistyped a key needs the fix, not a traceback.
"""

from __future__ import annotations

import importlib
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

__all__ = ["app", "main", "options_epilog", "world_app"]

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
    args = list(args or [])
    preset: str | Path | None = args.pop(0) if args and "=" not in args[0] else None
    if config is not None:
        if preset is not None:
            raise ConfigError(f"give a preset or --config, not both (got '{preset}' and --config {config})")
        preset = config
    return load_config(WorldPreset, preset if preset is not None else "default", args, group="world")


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; a UserError becomes ``error: <message>`` on stderr and exit 2."""
    try:
        app(args=argv, prog_name="invarlab")
    except UserError as e:
        Console(stderr=True, soft_wrap=True).print(Text(f"error: {e}", style="red"))
        sys.exit(2)


if __name__ == "__main__":
    main()
