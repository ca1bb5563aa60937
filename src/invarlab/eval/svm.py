"""VOC07-style multi-label classification by one-vs-rest linear SVMs, scored by mean average precision
(PAPERS.md §2.4.1, P2's ``evaluation/voc_svm/``; the protocol of Goyal et al.'s benchmark).

* Features are L2-normalised as ``x / (‖x‖ + 1e-5)``.
* Labels are ``(N, C)`` in ``{1, 0, −1}``: present, "difficult", absent. ``0`` is mapped to ``−1``, so difficult
  objects count as negatives, in training and (by default) in testing.
* One ``sklearn.svm.LinearSVC`` per class: ``C = 0.5``, ``class_weight = {1: 2, −1: 1}``, squared hinge loss,
  L2 penalty, ``dual=True``, ``tol = 1e-4``, ``max_iter = 2000`` (and ``random_state = 0``, which the paper does
  not set, so runs repeat exactly: liblinear's dual solver visits coordinates in random order).
* Each class's test scores are the SVM's decision values; AP is VOC's all-point interpolated AP (below); the
  reported number is the mean over classes, in percent.

VOC all-point interpolated AP (VOC 2010+ devkit, also PCL's ``metrics.py``): rank the images by score (highest
first; ties keep input order), with ``tp_i``, ``fp_i`` the positives / negatives among the first ``i``,
``rec_i = tp_i / n_pos``, ``prec_i = tp_i / i``; take the precision envelope ``p̂(r) = max_{i: rec_i ≥ r} prec_i``
and sum it over the recall steps:

    AP = Σ_i (rec_i − rec_{i−1}) · p̂(rec_i),    rec_0 = 0

It equals scikit-learn's (non-interpolated) ``average_precision_score`` whenever the precision at each positive
is no lower than at every later positive, and is larger otherwise.

Fixed from the official script: validation features are used for validation. When several ``costs`` are
given, each class's cost is chosen by AP on ``val_feats`` / ``val_labels`` (never on the test set; ties, and
classes without a validation positive, take the first of ``costs``), then that class's SVM is trained on the
training set. A class without positive training images gets no SVM, and a class without positive test images
has no AP; both are reported as ``nan`` and left out of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.svm import LinearSVC

__all__ = ["SVM_COST", "l2_normalize", "voc07_svm", "voc_ap"]

SVM_COST = 0.5


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def l2_normalize(features: Any) -> np.ndarray:
    """``x / (‖x‖₂ + 1e-5)`` per row, float64."""
    x = _numpy(features, np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def voc_ap(scores: Any, labels: Any) -> float:
    """VOC all-point interpolated AP (module docstring) of ``scores`` ``(N,)`` against ``labels`` ``(N,)``
    (positive where ``> 0``); ``nan`` when there is no positive. A fraction in ``[0, 1]``."""
    s, y = _numpy(scores, np.float64).ravel(), _numpy(labels).ravel() > 0
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape} and {y.shape}")
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    hit = y[np.argsort(-s, kind="stable")]
    tp = np.cumsum(hit)
    rec = np.concatenate([[0.0], tp / n_pos, [1.0]])
    prec = np.concatenate([[0.0], tp / np.arange(1, len(hit) + 1), [0.0]])
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    step = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[step + 1] - rec[step]) * envelope[step + 1]))


def _svm(cost: float) -> LinearSVC:
    return LinearSVC(
        C=cost,
        class_weight={1: 2, -1: 1},
        loss="squared_hinge",
        penalty="l2",
        dual=True,
        tol=1e-4,
        max_iter=2000,
        random_state=0,
    )


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    y = _numpy(labels)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"{name}_labels must be (N={n}, C) in {{1, 0, -1}}, got shape {y.shape}")
    if not np.isin(y, (1, 0, -1)).all():
        raise ValueError(f"{name}_labels must hold only 1 (present), 0 (difficult) and -1 (absent)")
    return y.astype(np.int64)


def voc07_svm(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    cost: float = SVM_COST,
    class_names: Sequence[str] | None = None,
    costs: Sequence[float] | None = None,
    val_feats: Any = None,
    val_labels: Any = None,
    ignore_difficult_in_test: bool = False,
) -> dict[str, Any]:
    """``{"mAP": %, "ap": {class: %}}`` (plus ``"cost": {class: C}`` when ``costs`` are chosen on validation).

    Features ``(N, D)`` (tensor or array), labels ``(N, C)`` in ``{1, 0, −1}``. ``class_names`` name the
    columns (default ``"0"``, ``"1"``, ...). ``ignore_difficult_in_test=True`` drops difficult test images from
    a class's AP instead of counting them as negatives (the VOC detection convention; not the paper's)."""
    x_tr, x_te = l2_normalize(train_feats), l2_normalize(test_feats)
    y_tr = _labels(train_labels, len(x_tr), "train")
    y_te = _labels(test_labels, len(x_te), "test")
    n_classes = y_tr.shape[1]
    if y_te.shape[1] != n_classes or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(
            f"train and test differ: labels {y_tr.shape} vs {y_te.shape}, D {x_tr.shape[1]} vs {x_te.shape[1]}"
        )
    names = [str(c) for c in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names for {n_classes} label columns")
    choose = costs is not None and len(costs) > 1
    if choose and (val_feats is None or val_labels is None):
        raise ValueError(
            "several costs need val_feats and val_labels to choose from (the test set is never used)"
        )
    if choose:
        x_va = l2_normalize(val_feats)
        y_va = _labels(val_labels, len(x_va), "val")
    ap: dict[str, float] = {}
    chosen: dict[str, float] = {}
    for c, name in enumerate(names):
        target = np.where(y_tr[:, c] == 1, 1, -1)  # difficult (0) counts as negative
        if not (target == 1).any() or (target == 1).all():
            ap[name] = math.nan
            continue
        best_cost = cost if not choose else costs[0]  # type: ignore[index]
        if choose:
            val_ap = [
                voc_ap(_svm(k).fit(x_tr, target).decision_function(x_va), y_va[:, c] == 1) for k in costs
            ]  # type: ignore[union-attr]
            if not all(math.isnan(v) for v in val_ap):
                best_cost = costs[int(np.nanargmax(val_ap))]  # type: ignore[index]
            chosen[name] = float(best_cost)
        scores = _svm(best_cost).fit(x_tr, target).decision_function(x_te)
        keep = y_te[:, c] != 0 if ignore_difficult_in_test else np.ones(len(x_te), dtype=bool)
        ap[name] = voc_ap(scores[keep], y_te[keep, c] == 1) * 100
    valid = [v for v in ap.values() if not math.isnan(v)]
    out: dict[str, Any] = {"mAP": float(np.mean(valid)) if valid else math.nan, "ap": ap}
    if choose:
        out["cost"] = chosen
    return out
