"""Import torchvision and lightly next to the CPU build of torch, for benchmarks: the tests' helper, reused.

``tests/torchvision_compat.py`` registers the two operator schemas that PyPI's CUDA-linked torchvision needs
before it imports with CPU torch (see its docstring). This module loads that file by path (it has the same
module name as this one, so a plain import would find this file again) and re-exports it, so tests and
benchmarks share one implementation. lightly imports torchvision, so it must come after the registration too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PATH = Path(__file__).resolve().parents[1] / "tests" / "torchvision_compat.py"
_NAME = "_invarlab_tests_torchvision_compat"


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_PATH}: benchmarks need the repository's tests/ folder beside them")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


import_torchvision = _load().import_torchvision


def import_lightly() -> ModuleType:
    """``lightly``, imported after torchvision has been made importable (``pip install -e '.[bench]'``)."""
    import_torchvision()
    return importlib.import_module("lightly")


__all__ = ["import_lightly", "import_torchvision"]
