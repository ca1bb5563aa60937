"""The controlled rendered world: every factor of every image is known and can be varied alone.

Names load lazily, so that reading a world config (the CLI's help, presets) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CATEGORY_GROUPS": ".catalog",
    "CATEGORY_NAMES": ".catalog",
    "build_catalog": ".catalog",
    "Factors": ".factors",
    "RenderOutput": ".renderer",
    "World": ".renderer",
    "render": ".renderer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'invarlab.world' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
