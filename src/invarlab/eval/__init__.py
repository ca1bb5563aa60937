"""Evaluations on cached features: pure functions from feature tensors to plain dicts of numbers, ready for
:func:`invarlab.results.record_result`. They never import training code.

Names load lazily, so importing the package costs nothing until an evaluation is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "knn_accuracy": ".knn",
    "knn_classify": ".knn",
    "knn_scores": ".knn",
    "fit_logistic": ".linear",
    "linear_probe": ".linear",
    "few_shot": ".fewshot",
    "few_shot_suite": ".fewshot",
    "mean_ci": ".fewshot",
    "voc07_svm": ".svm",
    "voc_ap": ".svm",
    "azimuth_bins": ".invariance",
    "elevation_bins": ".invariance",
    "factor_probe": ".invariance",
    "light_direction_bins": ".invariance",
    "ris": ".invariance",
    "segment_retrieval": ".retrieval",
    "label_propagation": ".propagation",
    "evaluate_videos": ".propagation",
    "region_similarity": ".propagation",
    "boundary_measure": ".propagation",
    "DenseNet": ".dense",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'invarlab.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
