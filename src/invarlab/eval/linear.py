"""Linear probe on cached features: multinomial logistic regression, full batch, L-BFGS.

Features are standardised with the training statistics, ``x̃ = (x − μ_train) / (σ_train + 1e-6)`` per dimension,
then ``W`` ``(D, C)`` and ``b`` ``(C,)`` minimise

    J(W, b) = (1/n) Σ_i −log softmax(x̃_i W + b)_{y_i} + (λ/2) ‖W‖²_F            (the bias is not penalised)

which is scikit-learn's ``LogisticRegression`` objective ``C Σ_i CE_i + ½‖W‖²`` divided by ``n C``; so
``λ = 1 / (n C)``, i.e. ``C = 1 / (n λ)``. ``J`` is strictly convex in ``W``, so the optimiser only decides how
close to the one minimum we get (L-BFGS with strong-Wolfe line search, stopped when the largest gradient entry
falls below ``tol`` or after ``max_iter`` iterations).

:func:`linear_probe` chooses ``λ`` on a validation split carved from the training set (stratified: a
``val_fraction`` share of every class with at least two samples), from :data:`WEIGHT_DECAY_GRID` (one value per
decade, 1e-6 ... 1e-1; ties go to the larger ``λ``), then refits on the whole training set with the chosen ``λ``
and reports top-1 / top-5 accuracy (percent) on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.eval.knn import topk_accuracy

__all__ = [
    "WEIGHT_DECAY_GRID",
    "LogisticModel",
    "fit_logistic",
    "linear_probe",
    "stratified_split",
]

WEIGHT_DECAY_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class LogisticModel:
    """A fitted probe: standardisation statistics and the linear map. ``scores(x)`` gives ``(N, C)`` logits."""

    def __init__(self, mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor) -> None:
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias

    def scores(self, x: Tensor) -> Tensor:
        x = x.to(self.weight.dtype)
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return self.scores(x).argmax(dim=1)


def _check_xy(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}_feats must be (N, D), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}_labels must be ({x.shape[0]},), one label per row, got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}_feats is empty")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name}_labels must be integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"{name}_labels must be >= 0; drop unlabelled samples (label -1) before calling")


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 500,
    tol: float = 1e-5,
    init: LogisticModel | None = None,
) -> LogisticModel:
    """Minimise ``J(W, b)`` (module docstring) on features ``x`` ``(n, D)`` and labels ``y`` ``(n,)`` after
    standardising with ``x``'s own statistics. Computes in float64 when ``x`` is float64, else float32.
    ``init`` warm-starts from another model's ``W, b`` (its statistics are ignored)."""
    _check_xy(x, y, "train")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) + 1e-6
    xs = (x - mean) / std
    y = y.to(x.device).long()
    d = x.shape[1]
    if init is None:
        w = torch.zeros(d, num_classes, dtype=dtype, device=x.device)
        b = torch.zeros(num_classes, dtype=dtype, device=x.device)
    else:
        w, b = init.weight.to(dtype).clone(), init.bias.to(dtype).clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,  # mostly stops on the gradient; this catches a loss stalled at float precision
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticModel(mean, std, w.detach(), b.detach())


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: from each class with ``m >= 2`` samples, ``max(1, round(val_fraction m))``
    random samples (at most ``m − 1``) go to validation; classes with one sample stay in train."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = labels.cpu().long()
    g = torch.Generator().manual_seed(seed)
    key = torch.rand(labels.shape[0], generator=g, dtype=torch.float64)
    order = torch.argsort(labels.double() * 2 + key)  # by class, random within a class (key < 1 < 2)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.shape[0]) - starts[labels[order]]
    m = counts[labels[order]]
    n_val = (val_fraction * m.double()).round().long().clamp(min=1).minimum(m - 1)
    is_val = rank < n_val
    return order[~is_val].sort().values, order[is_val].sort().values


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
    max_iter: int = 500,
    tol: float = 1e-5,
) -> dict[str, float | dict[str, float]]:
    """Linear-probe accuracy: ``{"top1": %, "top5": %, "weight_decay": λ, "val_top1": {str(λ): %}}``.

    ``λ`` is chosen by validation top-1 over ``weight_decays`` (module docstring); with a single value there is
    no validation split and ``val_top1`` is empty. Labels are integer classes ``>= 0``; ``num_classes``
    defaults to ``max(labels) + 1`` over train and test.
    """
    _check_xy(train_feats, train_labels, "train")
    _check_xy(test_feats, test_labels, "test")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"train and test features differ in D: {train_feats.shape[1]} vs {test_feats.shape[1]}"
        )
    if not weight_decays:
        raise ValueError("weight_decays is empty: give at least one weight decay")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    val_top1: dict[str, float] = {}
    chosen, init = float(weight_decays[0]), None
    if len(weight_decays) > 1:
        tr, va = stratified_split(train_labels, val_fraction, seed)
        if len(va) == 0:
            raise ValueError(
                "no class has two training samples, so no validation split: pass one weight_decays"
            )
        x_tr, y_tr = train_feats[tr], train_labels[tr]
        best = -1.0
        # Large to small λ with warm starts: each solution is a good start for the next (a regularisation path).
        model = None
        for wd in sorted((float(v) for v in weight_decays), reverse=True):
            model = fit_logistic(x_tr, y_tr, num_classes, wd, max_iter, tol, init=model)
            acc = float(
                (model.predict(train_feats[va]).cpu() == train_labels[va].cpu()).double().mean() * 100
            )
            val_top1[repr(wd)] = acc
            if acc > best:  # strict: ties keep the larger λ, seen first
                best, chosen, init = acc, wd, model
    model = fit_logistic(train_feats, train_labels, num_classes, chosen, max_iter, tol, init=init)
    acc = topk_accuracy(model.scores(test_feats), test_labels)
    return {"top1": acc["top1"], "top5": acc["top5"], "weight_decay": chosen, "val_top1": val_top1}
