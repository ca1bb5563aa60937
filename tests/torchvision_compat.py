"""Import torchvision (and what builds on it, e.g. lightly) next to the CPU build of torch.

PyPI's torchvision wheels are CUDA-linked: with CPU torch their compiled operators do not load, and
``import torchvision`` fails in its fake-tensor registrations with
``RuntimeError: operator torchvision::nms does not exist``. Registering the schemas of the two operators that it
registers unconditionally (``nms`` and ``qnms``) lets the pure-Python parts (models, transforms v2 functional)
import and work. invarlab itself never needs torchvision; only tests and benchmarks go through here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def import_torchvision() -> ModuleType:
    """``torchvision``, importable whether or not its compiled operators load."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for name, schema in _SCHEMAS.items():
            if not _has_op(name):
                _LIBRARY.define(schema)
    for mod in [m for m in list(importlib.sys.modules) if m == "torchvision" or m.startswith("torchvision.")]:
        del importlib.sys.modules[mod]
    return importlib.import_module("torchvision")
