"""A run's ``results.json``: every evaluation writes its numbers here, the report reads them.

Layout (JSON object, two fixed levels, then the evaluation's own metrics)::

    {
      "<evaluation>": {                  # knn, linear, fewshot, svm, corruptions, invariance, factor_probes, ...
        "<representation>": {            # "model" (the run's backbone), "random" (same architecture, random
          "<metric>": number | str |     #  init: the floor), or a LooC space ("z0", "z_colour", "looc++", ...)
                      {nested metrics}
        }
      },
      "_meta": {"<evaluation>": {...}}   # settings of each evaluation (k, temperature, dataset, ...)
    }

Writes are read-modify-write under the same file name, atomic (temporary file + ``os.replace``), so an
interrupted evaluation never leaves a half-written file and evaluations run one after the other accumulate.
Non-finite floats are written as strings ("nan", "inf") so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from invarlab.atomic import atomic_write_text

__all__ = ["RESULTS_FILE", "load_results", "record_result", "results_path"]

RESULTS_FILE = "results.json"


def results_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/results.json``."""
    return Path(run_dir) / RESULTS_FILE


def load_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's results, ``{}`` when none were written yet. A corrupt file raises ``ValueError`` naming it."""
    path = results_path(run_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it and re-run the evaluations") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def record_result(
    run_dir: str | os.PathLike[str],
    evaluation: str,
    representation: str,
    values: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store ``values`` as ``results[evaluation][representation]`` (replacing what was there) and ``meta``
    as ``results["_meta"][evaluation]``; returns the whole updated results."""
    if evaluation.startswith("_"):
        raise ValueError(f"evaluation name {evaluation!r} may not start with '_' (reserved for _meta)")
    results = load_results(run_dir)
    results.setdefault(evaluation, {})[representation] = _clean(values)
    if meta is not None:
        results.setdefault("_meta", {})[evaluation] = _clean(meta)
    atomic_write_text(results_path(run_dir), json.dumps(results, indent=2, sort_keys=True) + "\n", "results")
    return results


def _clean(value: Any) -> Any:
    """JSON-safe copy: tensors / numpy scalars to Python numbers, non-finite floats to strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
