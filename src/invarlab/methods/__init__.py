"""Training methods: each turns a batch of uint8 images into a loss (see :mod:`invarlab.methods.base`).

``build_method(cfg, num_classes)`` builds the method that ``cfg.name`` names; :func:`register_method` adds one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from invarlab.config_schema import validate
from invarlab.errors import ConfigError
from invarlab.methods.base import VIEW_RECIPES, Method, MethodConfig, StepOutput, supervised_view_config
from invarlab.methods.looc import LooC, LoocRepresentations, load_looc, looc_loss
from invarlab.methods.moco import MoCo, moco_logits, moco_loss
from invarlab.methods.pirl import PIRL
from invarlab.methods.simclr import SimCLR
from invarlab.methods.supervised import Supervised
from invarlab.methods.temporal import FrameTemporal, RegionTracker

__all__ = [
    "METHODS",
    "PIRL",
    "VIEW_RECIPES",
    "FrameTemporal",
    "LooC",
    "LoocRepresentations",
    "Method",
    "MethodConfig",
    "MoCo",
    "RegionTracker",
    "SimCLR",
    "StepOutput",
    "Supervised",
    "build_method",
    "load_looc",
    "looc_loss",
    "moco_logits",
    "moco_loss",
    "register_method",
    "supervised_view_config",
]

MethodFactory = Callable[[MethodConfig, "int | None"], Method]

# name -> factory(cfg, num_classes). Names are matched lower-case with '-' and '_' removed.
METHODS: dict[str, MethodFactory] = {"moco": MoCo, "simclr": SimCLR, "supervised": Supervised, "looc": LooC}
_ALIASES = {"mocov2": "moco"}
METHODS.update(pirl=PIRL, frametemporal=FrameTemporal, regiontracker=RegionTracker)


def _key(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    return _ALIASES.get(key, key)


def register_method(name: str, factory: MethodFactory) -> None:
    """Make ``build_method`` build ``factory(cfg, num_classes)`` for ``cfg.name == name``."""
    METHODS[_key(name)] = factory


def build_method(cfg: MethodConfig, num_classes: int | None = None) -> Method:
    """The method ``cfg.name`` names, built from ``cfg`` (validated first). ``num_classes`` is the number of
    labelled classes of the training data, or None without labels (the supervised method needs it)."""
    validate(cfg)
    key = _key(cfg.name)
    if key not in METHODS:
        near = difflib.get_close_matches(key, sorted(METHODS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown method {cfg.name!r}{hint}: use one of {', '.join(sorted(METHODS))}")
    return METHODS[key](cfg, num_classes)
