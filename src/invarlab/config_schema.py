"""The schema side of structured configs: walk a dataclass schema, type-check data against it, check values.

Kept apart from :mod:`invarlab.config` (presets, overrides, hashing) so each file reads alone. A schema is
a dataclass whose fields carry ``help`` and optionally ``range``, ``choices`` or ``interval`` metadata (see
:func:`invarlab.config.opt`). Messages name the dotted key, the value and where it was set, and suggest the
nearest valid keys, because that is what a user needs to fix a preset or an override.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, NamedTuple

from invarlab.errors import ConfigError

__all__ = ["ENTRY", "Option", "check_mapping", "check_values", "describe", "format_value", "validate"]

ENTRY = "<name>"  # stands for a user-chosen key of a dict-of-dataclass field in dotted keys


# ---------------------------------------------------------------------------------------------- schema walk
@cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _fields(schema: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = _hints(schema)
    return [(f, hints[f.name]) for f in dataclasses.fields(schema)]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
        return (rest[0] if len(rest) == 1 else typing.Union[rest]), True  # noqa: UP007
    return tp, False


def _unwrap(tp: Any) -> tuple[Any, tuple, bool]:
    """(origin, args, optional) of a type hint, with ``X | None`` reduced to X."""
    tp, optional = _strip_optional(tp)
    return typing.get_origin(tp), typing.get_args(tp), optional


def _is_schema(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None:
        name = getattr(tp, "__name__", str(tp))
    else:
        name = f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return f"{name} | None" if optional else name


def _dotted_keys(schema: type, prefix: str = "") -> list[str]:
    """Every valid dotted key (leaves and sections); dict-of-dataclass entries appear as ``<name>``."""
    keys = []
    for f, tp in _fields(schema):
        key = f"{prefix}{f.name}"
        keys.append(key)
        origin, args, _ = _unwrap(tp)
        if _is_schema(tp):
            keys += _dotted_keys(tp, key + ".")
        elif origin is dict and _is_schema(args[1]):
            keys += _dotted_keys(args[1], f"{key}.{ENTRY}.")
    return keys


def _allowed(meta: Mapping) -> str:
    if "choices" in meta:
        return "|".join(format_value(c) for c in meta["choices"])
    if "range" in meta:
        lo, hi = meta["range"]
        return (
            f"{lo}..{hi}" if lo is not None and hi is not None else (f">= {lo}" if hi is None else f"<= {hi}")
        )
    return ""


def format_value(value: Any) -> str:
    """A value as a user would type it in YAML (``true``, ``''``, ``[0.0, 90.0]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


class Option(NamedTuple):
    """One line of :func:`describe`: ``allowed`` is ``"lo..hi"``, ``">= lo"``, ``"a|b|c"`` or empty."""

    key: str
    type: str
    default: Any
    allowed: str
    help: str


def describe(schema: type, prefix: str = "") -> list[Option]:
    """Every option of ``schema`` with its type, default, allowed values and help, in declaration order."""
    out = []
    for f, tp in _fields(schema):
        key = f"{prefix}{f.name}"
        origin, args, _ = _unwrap(tp)
        if _is_schema(tp):
            out += describe(tp, key + ".")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = None if default is dataclasses.MISSING else default
        out.append(Option(key, _type_name(tp), default, _allowed(f.metadata), f.metadata.get("help", "")))
        if origin is dict and _is_schema(args[1]):
            out += describe(args[1], f"{key}.{ENTRY}.")
    return out


# ------------------------------------------------------------------------------------------- type checking
def _nearest(word: str, candidates: list[str], cutoff: float = 0.6) -> list[str]:
    """The candidates most similar to ``word`` (difflib ratio), only those close to the best one.

    Dotted keys share long prefixes, so a plain cutoff also offers ``world.render.device`` for a typo in
    ``world.render.resolution``; keeping only near-ties of the best match gives one clear suggestion.
    """
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in set(candidates)), reverse=True
    )
    best = scored[0][0] if scored else 0.0
    return [c for r, c in scored[:3] if r >= cutoff and r >= best - 0.05]


def _unknown_key(schema: type, prefix: str, key: str, value: Any, root: type, where: str) -> ConfigError:
    """An unknown-key error with the nearest valid dotted keys (difflib), dict entry names filled in."""
    user = f"{prefix}{key}"
    while isinstance(value, Mapping) and len(value) == 1:  # follow a single chain: a.b.c=1 -> "a.b.c"
        ((k, value),) = value.items()
        user += f".{k}"
    parts = user.split(".")
    candidates = []
    for cand in _dotted_keys(root):
        segs = cand.split(".")
        segs = [parts[i] if s == ENTRY and i < len(parts) else s for i, s in enumerate(segs)]
        candidates.append(".".join(segs))
    near = _nearest(user, candidates)
    if not near:
        near = [prefix + s for s in _nearest(key, [f.name for f in dataclasses.fields(schema)], cutoff=0.5)]
    hint = (
        f"; did you mean: {', '.join(near)}?"
        if near
        else (
            f"; valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(f.name for f in dataclasses.fields(schema))
        )
    )
    return ConfigError(f"unknown key '{user}' ({where}){hint}")


def _wrong_type(key: str, value: Any, expected: str, where: str) -> ConfigError:
    got = f"{format_value(value)} ({type(value).__name__})"
    return ConfigError(f"wrong type for '{key}' ({where}): got {got}, expected {expected}")


def _coerce(tp: Any, value: Any, key: str, where: str, root: type, sources: dict[str, str] | None) -> Any:
    """``value`` checked against the type hint ``tp`` (ints widen to float, numbers to str)."""
    tp, optional = _strip_optional(tp)
    if value is None and optional:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_schema(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        prefix = f"{key}." if key else ""
        return check_mapping(tp, {} if value is None else value, prefix, where, root, sources)
    if sources is not None:
        sources[key] = where
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(key, value, _type_name(tp), where)
        return [_coerce(args[0], v, f"{key}[{i}]", where, root, None) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _wrong_type(key, value, f"a mapping ({_type_name(tp)})", where)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where, root, sources) for k, v in value.items()}
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }.get(tp, isinstance(value, tp) if isinstance(tp, type) else True)
    if not ok:
        raise _wrong_type(key, value, _type_name(tp), where)
    return tp(value) if tp in (float, str) else value


def check_mapping(
    schema: type, data: Any, prefix: str, where: str, root: type, sources: dict[str, str] | None
) -> dict[str, Any]:
    """A (partial) mapping of ``schema`` fields, type-checked; records ``key -> where`` in ``sources``."""
    if not isinstance(data, Mapping):
        raise _wrong_type(prefix.rstrip(".") or "<top level>", data, f"a mapping of {schema.__name__}", where)
    hints = _hints(schema)
    out = {}
    for k, v in data.items():
        if k not in hints or not isinstance(k, str):
            raise _unknown_key(schema, prefix, str(k), v, root, where)
        out[k] = _coerce(hints[k], v, prefix + k, where, root, sources)
    return out


# --------------------------------------------------------------------------------------- value validation
def _where(key: str, sources: Mapping[str, str], fallback: str) -> str:
    while key:  # the key itself, else the nearest enclosing key that was set: a.b[2].c -> a.b[2] -> a.b -> a
        if key in sources:
            return sources[key]
        parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", key)
        key = "" if parent == key else parent
    return fallback


def _check_value(key: str, value: Any, meta: Mapping, where: str) -> None:
    if value is None:  # only an optional field can hold None (types are checked first); nothing to bound
        return
    if meta.get("interval") and (
        not isinstance(value, (list, tuple)) or len(value) != 2 or value[0] > value[1]
    ):
        raise ConfigError(
            f"'{key}' = {format_value(value)} ({where}) must be [lo, hi]: two numbers with lo <= hi"
        )
    items = value if isinstance(value, (list, tuple)) else [value]  # list fields: check every entry
    if "choices" in meta:
        for v in items:
            if v not in meta["choices"]:
                allowed = ", ".join(map(format_value, meta["choices"]))
                raise ConfigError(f"'{key}' = {format_value(v)} ({where}) is not one of: {allowed}")
    if "range" in meta:
        lo, hi = meta["range"]
        for v in items:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(
                    f"'{key}' = {format_value(v)} ({where}) is out of range: allowed {_allowed(meta)}"
                )


def check_values(obj: Any, prefix: str, sources: Mapping[str, str], fallback: str = "default") -> None:
    """Ranges, choices and intervals of a typed config, walking nested and dict/list-held dataclasses.

    Runs on the merged object, not per layer, because only the final value matters (a preset may set a value
    an override then fixes). ``sources`` names where each key was last set; ``fallback`` covers the rest.
    """
    for f in dataclasses.fields(obj):
        key, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, key + ".", sources, fallback)
        elif isinstance(value, Mapping):
            for name, entry in value.items():
                if dataclasses.is_dataclass(entry):
                    check_values(entry, f"{key}.{name}.", sources, fallback)
        elif isinstance(value, (list, tuple)):
            for i, entry in enumerate(value):
                if dataclasses.is_dataclass(entry):
                    check_values(entry, f"{key}[{i}].", sources, fallback)
        _check_value(key, value, f.metadata, _where(key, sources, fallback))


def validate(obj: Any, sources: Mapping[str, str] | None = None) -> None:
    """Check types, ranges, choices and intervals of a config instance (also one built in Python).

    ``sources`` maps dotted keys to where they were set (``in FILE``), so a message points at the line to fix.
    """
    _coerce(type(obj), obj, "", "in the config object", type(obj), None)
    check_values(obj, "", sources or {}, fallback="in the config object")
