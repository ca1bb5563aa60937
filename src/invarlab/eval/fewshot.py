"""Few-shot classification on cached features: n-way k-shot logistic regression over repeated trials.

One trial (episode): draw ``ways`` classes (or every eligible class: ``ways="all"``), ``shots`` support images
per class, and query images of the same classes; train a linear classifier ``softmax(x W + b)`` on the support
set; its accuracy on the queries is the trial's score. The reported number is the mean over trials with a 95%
confidence interval.

Training follows the third-party LooC protocol (PAPERS.md §3.8, [3P], treated as unverified): Adam, learning
rate 0.03, 250 iterations, minibatch 64, no weight decay, weights and bias initialised at zero. Where that
protocol is silent: every iteration draws a fresh random minibatch of ``min(64, S)`` distinct support images per
trial (so with ``S <= 64`` support images it is full-batch gradient descent with Adam); features are
L2-normalised first (``normalize=True``). All trials train together as one batched tensor program: ``W`` is
``(T, D, ways)`` and the loss is the *sum* over trials of each trial's mean cross-entropy, so each trial's
gradient, and Adam's elementwise update, is exactly what it would be alone.

Query images: from the same pool (``query_features=None``), ``queries`` per class drawn disjoint from the
support set, or with ``queries=None`` every remaining image of the trial's classes; from a separate pool
(``query_features``, e.g. the test split while support comes from train), ``queries`` per class, or with
``queries=None`` every image of the trial's classes. A class is eligible when it has enough images for that.

Confidence interval: ``mean ± q · s / √T`` with ``s`` the sample standard deviation (``T − 1`` in the
denominator) over ``T`` trials and ``q`` the Student-t quantile ``t_{0.975, T−1}`` (``ci="t"``, the default: right
for few trials, e.g. 2.26 at T = 10), or ``q = 1.96`` (``ci="normal"``, the few-shot literature's
``1.96 · std / √T``, which is too narrow for small T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor

__all__ = ["few_shot", "few_shot_suite", "few_shot_trials", "mean_ci", "train_batched_logistic"]

Ways = int | Literal["all"]


def mean_ci(values: Tensor | Sequence[float], confidence: float = 0.95, ci: str = "t") -> tuple[float, float]:
    """``(mean, half_width)`` of the confidence interval of the mean (module docstring); the half width is
    ``nan`` for a single value."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("mean_ci of no values")
    if ci not in ("t", "normal"):
        raise ValueError(f"ci must be 't' or 'normal', got {ci!r}")
    t = v.numel()
    if t == 1:
        return float(v[0]), math.nan
    tail = (1 + confidence) / 2
    q = stats.t.ppf(tail, t - 1) if ci == "t" else stats.norm.ppf(tail)
    return float(v.mean()), float(q * v.std(correction=1) / math.sqrt(t))


def train_batched_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    lr: float = 0.03,
    iters: int = 250,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(W (T, D, C), b (T, C))`` of ``T`` independent softmax classifiers trained at once with Adam on
    ``x`` ``(T, S, D)``, ``y`` ``(T, S)``; loss ``Σ_t [mean_i CE_t,i + (wd/2)‖W_t‖²]``."""
    t, s, d = x.shape
    # W is stored (T, C, D): the products with the (T, S, D) support features are then several times faster on
    # the CPU for few classes. The gradient is written out (softmax − one-hot), which avoids autograd's
    # transposed copies of the features: 4x faster per step.
    w = torch.zeros(t, num_classes, d, dtype=x.dtype, device=x.device)
    b = torch.zeros(t, 1, num_classes, dtype=x.dtype, device=x.device)
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
    # The fused kernel does Adam's update in one pass (the unfused one spends half the step in it).
    opt = torch.optim.Adam([w, b], lr=lr, fused=x.device.type in ("cpu", "cuda"))
    batch = min(batch_size, s)
    rows = torch.arange(t, device=x.device)[:, None]
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    for _ in range(iters):
        if batch < s:
            pick = torch.rand(t, s, generator=generator).argsort(dim=1)[:, :batch].to(x.device)
            xb, target = x[rows, pick], onehot[rows, pick]
        else:
            xb, target = x, onehot
        # d/dlogits of (1/B) Σ_i CE_i is (softmax − one-hot) / B; d/dW = that^T X, d/db = its column sums.
        dlogits = (torch.softmax(torch.bmm(xb, w.transpose(1, 2)) + b, dim=2) - target) / batch
        torch.bmm(dlogits.transpose(1, 2), xb, out=w.grad)
        torch.sum(dlogits, dim=1, keepdim=True, out=b.grad)
        if weight_decay:
            w.grad.add_(w, alpha=weight_decay)
        opt.step()
    return w.transpose(1, 2), b.squeeze(1)


class _Pool:
    """Images of one pool grouped by class: ``rows[start[c] : start[c] + count[c]]`` are class ``c``'s."""

    def __init__(self, labels: Tensor, num_classes: int) -> None:
        self.labels = labels
        self.rows = torch.argsort(labels, stable=True)
        self.count = torch.bincount(labels, minlength=num_classes)
        self.start = torch.cumsum(self.count, 0) - self.count

    def sample(self, classes: Tensor, need: int, gen: torch.Generator) -> Tensor:
        """``(T, W, need)`` distinct random images of each class in ``classes`` ``(T, W)``."""
        widest = int(self.count[classes].max())
        keys = torch.rand(*classes.shape, widest, generator=gen)
        keys[torch.arange(widest) >= self.count[classes][..., None]] = 2.0  # beyond the class: never drawn
        pos = keys.topk(need, dim=2, largest=False).indices
        return self.rows[self.start[classes][..., None] + pos]


def _check(features: Tensor, labels: Tensor, name: str) -> Tensor:
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"{name} features must be (N, D) with labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or int(labels.min()) < 0:
        raise ValueError(f"{name} labels must be integer classes >= 0 (drop unlabelled samples first)")
    return labels.cpu().long()


def few_shot_trials(
    features: Tensor,
    labels: Tensor,
    ways: Ways = 5,
    shots: int = 1,
    queries: int | None = 15,
    trials: int = 10,
    seed: int = 0,
    query_features: Tensor | None = None,
    query_labels: Tensor | None = None,
    lr: float = 0.03,
    iters: int = 250,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    normalize: bool = True,
) -> tuple[Tensor, int]:
    """``(accuracy (trials,) in percent, ways)`` of ``trials`` episodes (module docstring)."""
    labels = _check(features, labels, "support")
    separate = query_features is not None
    if separate:
        if query_labels is None:
            raise ValueError("query_features given without query_labels")
        query_labels = _check(query_features, query_labels, "query")
        if query_features.shape[1] != features.shape[1]:
            raise ValueError(
                f"query features have D={query_features.shape[1]}, support D={features.shape[1]}"
            )
    if shots < 1 or trials < 1 or (queries is not None and queries < 1):
        raise ValueError(f"shots, trials and queries must be >= 1, got {shots}, {trials}, {queries}")
    n_classes = int(max(labels.max(), query_labels.max() if separate else 0)) + 1
    pool = _Pool(labels, n_classes)
    qpool = _Pool(query_labels, n_classes) if separate else pool
    same_pool_queries = 0 if separate else (queries or 1)
    ok = pool.count >= shots + same_pool_queries
    if separate:
        ok &= qpool.count >= (queries or 1)
    eligible = ok.nonzero().squeeze(1)
    n_ways = len(eligible) if ways == "all" else int(ways)
    if n_ways < 2 or n_ways > len(eligible):
        raise ValueError(
            f"{ways}-way needs at least {max(n_ways, 2)} classes with {shots} support + "
            f"{queries or 'at least 1'} query images; {len(eligible)} have them"
        )
    gen = torch.Generator().manual_seed(seed)
    if ways == "all":
        classes = eligible.expand(trials, -1)
    else:
        classes = eligible[torch.rand(trials, len(eligible), generator=gen).argsort(dim=1)[:, :n_ways]]
    if queries is None and not separate:
        drawn = _draw_all(pool, classes, gen)  # support = the first shots; queries = all the others
    else:
        drawn = pool.sample(classes, shots + (0 if separate else queries), gen)
    support = drawn[:, :, :shots].reshape(trials, -1)
    support_y = torch.arange(n_ways).repeat_interleave(shots).expand(trials, -1)

    def prepare(f: Tensor) -> Tensor:
        return F.normalize(f.float(), dim=1) if normalize else f.float()

    x = prepare(features)
    xq_all = prepare(query_features) if separate else x
    w, b = train_batched_logistic(
        x[support.to(x.device)], support_y.to(x.device), n_ways, lr, iters, batch_size, weight_decay, gen
    )

    if queries is not None:
        q = drawn[:, :, shots:] if not separate else qpool.sample(classes, queries, gen)
        q_y = torch.arange(n_ways)[None, :, None].expand_as(q).reshape(trials, -1)
        pred = (torch.bmm(xq_all[q.reshape(trials, -1).to(x.device)], w) + b[:, None]).argmax(dim=2).cpu()
        return (pred == q_y).double().mean(dim=1) * 100, n_ways
    # Variable-size query sets: one matrix product per trial.
    position = torch.full((trials, n_classes), -1, dtype=torch.long)
    position.scatter_(1, classes, torch.arange(n_ways).expand(trials, -1).contiguous())
    q_labels = qpool.labels
    acc = torch.empty(trials, dtype=torch.float64)
    for t in range(trials):
        mask = position[t, q_labels] >= 0
        if not separate:
            mask[support[t]] = False
        rows = mask.nonzero().squeeze(1)
        pred = (xq_all[rows.to(x.device)] @ w[t] + b[t]).argmax(dim=1).cpu()
        acc[t] = (pred == position[t, q_labels[rows]]).double().mean() * 100
    return acc, n_ways


def _draw_all(pool: _Pool, classes: Tensor, gen: torch.Generator) -> Tensor:
    """Each class's images in random order ``(T, W, widest)``, padded with -1 (only the first ``shots`` are read)."""
    widest = int(pool.count[classes].max())
    keys = torch.rand(*classes.shape, widest, generator=gen)
    beyond = torch.arange(widest) >= pool.count[classes][..., None]
    keys[beyond] = 2.0
    pos = keys.argsort(dim=2)
    rows = pool.rows[(pool.start[classes][..., None] + pos).clamp(max=len(pool.rows) - 1)]
    return rows.masked_fill(pos >= pool.count[classes][..., None], -1)


def few_shot(
    features: Tensor,
    labels: Tensor,
    ways: Ways = 5,
    shots: int = 1,
    queries: int | None = 15,
    trials: int = 10,
    seed: int = 0,
    ci: str = "t",
    **kwargs: object,
) -> dict[str, float]:
    """``{"mean": %, "ci95": half width %, "std": %, "trials": T, "ways": n, "shots": k}`` over ``trials``
    episodes; ``kwargs`` go to :func:`few_shot_trials` (query pool, lr, iters, batch_size, ...)."""
    options: dict = dict(kwargs)
    acc, n_ways = few_shot_trials(features, labels, ways, shots, queries, trials, seed, **options)
    mean, half = mean_ci(acc, 0.95, ci)
    std = float(acc.std(correction=1)) if trials > 1 else math.nan
    return {"mean": mean, "ci95": half, "std": std, "trials": trials, "ways": n_ways, "shots": shots}


def few_shot_suite(
    features: Tensor,
    labels: Tensor,
    ways: Sequence[Ways] = (5, "all"),
    shots: Sequence[int] = (1, 5),
    **kwargs: object,
) -> dict[str, dict[str, float]]:
    """:func:`few_shot` for every (ways, shots) pair, keyed ``"5way_1shot"``, ``"allway_5shot"``, ...; the
    default is 5-way and all-way, 1-shot and 5-shot. With ``ways="all"`` and no query pool, a class needs
    ``shots + queries`` images to take part."""
    out = {}
    for n in ways:
        for k in shots:
            out[f"{n}way_{k}shot"] = few_shot(features, labels, n, k, **kwargs)  # type: ignore[arg-type]
    return out
