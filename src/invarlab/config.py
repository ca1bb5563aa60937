"""Structured configs: dataclasses + OmegaConf, YAML presets, ``key=value`` overrides and validation.

A schema is a dataclass whose fields are declared with :func:`opt`, which stores ``help`` and, where it
applies, an inclusive ``range``, ``choices`` or ``interval=True`` (a ``[lo, hi]`` list) in the field metadata.
One walk of the schema serves three readers: :func:`load_config` validates against it, :func:`describe` prints
it in ``--help``, and :func:`config_hash` keys caches on it. Every mistake a user can make raises
:class:`~invarlab.errors.ConfigError` with a one-line message naming the key, the value and where it came
from, because a traceback out of OmegaConf tells a user nothing about which line of which file to fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.resources
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from invarlab.config_schema import Option, check_mapping, check_values, describe, validate
from invarlab.errors import ConfigError

__all__ = [
    "Option",
    "available_presets",
    "config_hash",
    "describe",
    "load_config",
    "opt",
    "resolve_preset",
    "to_yaml",
    "validate",
]

_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def opt(
    default: Any,
    help: str,
    range: tuple | None = None,
    choices: tuple | None = None,
    interval: bool = False,
    **kw: Any,
) -> Any:
    """A dataclass field with the metadata that validation and ``--help`` read.

    ``range`` is inclusive ``(lo, hi)``, either end may be None; ``choices`` lists the allowed values;
    ``interval=True`` marks a ``[lo, hi]`` list (two entries, ``lo <= hi``). Mutable defaults are copied per
    instance, so presets never share (and silently mutate) one list.
    """
    meta: dict[str, Any] = {"help": help}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = tuple(choices)
    if interval:
        meta["interval"] = True
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


# ------------------------------------------------------------------------------------------------ presets
def _preset_dirs(group: str | None) -> list[Any]:
    packaged = importlib.resources.files("invarlab") / "configs"
    return [d / group if group else d for d in (_REPO_CONFIGS, packaged)]


def available_presets(group: str | None = None) -> list[str]:
    """Names of the presets of ``group`` in the repository's ``configs/`` and the packaged copy."""
    names = set()
    for d in _preset_dirs(group):
        if d.is_dir():
            names |= {p.name.rsplit(".", 1)[0] for p in d.iterdir() if p.name.endswith((".yaml", ".yml"))}
    return sorted(names)


def resolve_preset(preset: str | Path, group: str | None = None) -> Path:
    """An existing file as is, else ``configs/<group>/<preset>.yaml`` (repository, then packaged copy)."""
    path = Path(preset).expanduser()
    if path.is_file():
        return path
    if isinstance(preset, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"config file not found: {preset}")
    for d in _preset_dirs(group):
        for ext in (".yaml", ".yml"):
            if (d / f"{preset}{ext}").is_file():
                return Path(str(d / f"{preset}{ext}"))
    kind = f"{group} preset" if group else "preset"
    avail = ", ".join(available_presets(group)) or "none"
    raise ConfigError(f"unknown {kind} '{preset}'; available: {avail} (or give the path of a YAML file)")


def _read_yaml(path: Path) -> Any:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    return {} if data is None else data


def _parse_override(text: str) -> tuple[str, Any]:
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' must look like key=value (e.g. world.render.resolution=32)")
    if not raw.strip():
        return key, ""
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override '{text}': value is not valid YAML ({getattr(e, 'problem', e)})"
        ) from None


def load_config(
    schema: type, preset: str | Path | None = None, overrides: Iterable[str] = (), group: str | None = None
) -> Any:
    """Schema defaults, then the YAML ``preset`` (file or name in ``group``), then ``key=value`` overrides.

    Values are YAML (``azimuth=[0,90]``); dotted keys reach into nested sections and dict entries
    (``datasets.train.kind=clips`` creates or updates entry ``train``). Returns a real ``schema`` instance.
    """
    sources: dict[str, str] = {}
    layers = []
    if preset is not None:
        path = resolve_preset(preset, group)
        layers.append(check_mapping(schema, _read_yaml(path), "", f"in {path}", schema, sources))
    for text in overrides:
        key, value = _parse_override(text)
        for part in reversed(key.split(".")):
            value = {part: value}
        layers.append(check_mapping(schema, value, "", f"in override '{text}'", schema, sources))
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), *layers))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None
    check_values(obj, "", sources)
    return obj


# ----------------------------------------------------------------------------------------- serialisation
def _plain(obj: Any, prefix: str, exclude: tuple[str, ...]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {
            str(k): _plain(v, f"{prefix}{k}.", exclude)
            for k, v in obj.items()
            if not any(fnmatch.fnmatchcase(f"{prefix}{k}", pat) for pat in exclude)
        }
    if isinstance(obj, (list, tuple)):
        return [_plain(v, prefix, exclude) for v in obj]
    return obj


def config_hash(obj: Any, exclude: Iterable[str] = ()) -> str:
    """sha256 of the canonical JSON (sorted keys) of a config, without the dotted keys matching ``exclude``.

    ``exclude`` takes fnmatch patterns (``datasets.*.seed``), so a cache can ignore fields that do not change
    its content (device, batch size). Stable across runs, processes and machines.
    """
    canon = json.dumps(_plain(obj, "", tuple(exclude)), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def to_yaml(obj: Any) -> str:
    """The resolved config as YAML, loadable again as a preset (``load_config(schema, path)``)."""
    return OmegaConf.to_yaml(OmegaConf.create(_plain(obj, "", ())))
