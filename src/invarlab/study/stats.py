"""Confidence intervals over seeds and the verdict of a claim.

For ``n`` per-seed values ``x_1..x_n`` with mean ``x̄`` and sample standard deviation ``s`` (``n - 1`` in the
denominator), the 95% t-interval is

    x̄ ± t_{0.975, n-1} · s / √n

(``n = 1`` has no interval: its half-width is NaN). The percentile bootstrap over seeds (an option) resamples
the ``n`` values with replacement ``resamples`` times and takes the 2.5% and 97.5% quantiles of the means.

A claim "A > B" is judged on the paired per-seed differences ``d_k = A_k − B_k`` (runs of one seed share the
seed's data order, evaluation splits and floor): **reproduced** when the 95% interval of ``d̄`` lies above 0,
**reversed** when it lies below, **not resolved** otherwise (or with fewer than two common seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["REPRODUCED", "REVERSED", "UNRESOLVED", "bootstrap_interval", "mean_interval", "verdict"]

REPRODUCED, REVERSED, UNRESOLVED = "reproduced", "reversed", "not resolved at this budget"


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "std", "n", "ci_low", "ci_high", "half_width", "values"}`` of the t-interval above."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "half_width": None,
            "ci_low": None,
            "ci_high": None,
            "values": [],
        }
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "half_width": half,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "values": [float(v) for v in x],
    }


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def verdict(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict[str, Any]:
    """The claim "a > b" on per-seed values ``{seed: value}``: the paired differences' interval and verdict."""
    common = sorted(set(a) & set(b))
    diff = mean_interval([a[k] - b[k] for k in common], level)
    if diff["n"] < 2:
        outcome = UNRESOLVED
    elif diff["ci_low"] > 0:
        outcome = REPRODUCED
    elif diff["ci_high"] < 0:
        outcome = REVERSED
    else:
        outcome = UNRESOLVED
    return {"difference": diff, "seeds": common, "verdict": outcome}
