"""invarlab.eval.linear against scikit-learn's LogisticRegression (same objective through C = 1 / (n λ)), the
split's stated proportions, and the validation choice of λ."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from invarlab.eval.linear import fit_logistic, linear_probe, stratified_split


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small tensors on a shared 2-core machine: a second OpenMP thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n: int, d: int, classes: int, seed: int, noise: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    # Unequal scales and offsets per dimension, so standardisation matters.
    scale = torch.rand(d, generator=g, dtype=torch.float64) * 5 + 0.1
    x = (centres[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale + 3.0
    return x, y


def _standardise(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    return ((x - ref.mean(0)) / (ref.std(0, correction=0) + 1e-6)).numpy()


@pytest.mark.parametrize("weight_decay", [1e-3, 3e-2])
def test_fit_matches_sklearn_logistic_regression(weight_decay: float) -> None:
    x_all, y_all = _blobs(700, 15, 4, seed=0)
    x, y, x_test, y_test = x_all[:400], y_all[:400], x_all[400:], y_all[400:]
    model = fit_logistic(x.float(), y, 4, weight_decay)
    ref = LogisticRegression(C=1 / (len(x) * weight_decay), tol=1e-10, max_iter=10_000)
    ref.fit(_standardise(x, x), y.numpy())
    ours = model.predict(x_test.float()).numpy()
    theirs = ref.predict(_standardise(x_test, x))
    assert (ours == theirs).mean() >= 0.98
    acc_ours, acc_theirs = (ours == y_test.numpy()).mean(), (theirs == y_test.numpy()).mean()
    assert abs(acc_ours - acc_theirs) <= 0.01
    assert 0.4 < acc_ours < 0.95  # overlapping classes: agreement is not trivial
    # Same strictly convex objective, so the same minimiser.
    np.testing.assert_allclose(model.weight.T.double().numpy(), ref.coef_, atol=2e-3)
    np.testing.assert_allclose(model.bias.double().numpy(), ref.intercept_, atol=2e-3)


def test_float64_fit_reaches_sklearn_minimum_tightly() -> None:
    x, y = _blobs(200, 6, 3, seed=5)
    model = fit_logistic(x, y, 3, 1e-2, tol=1e-9)
    ref = LogisticRegression(C=1 / (200 * 1e-2), tol=1e-12, max_iter=10_000).fit(
        _standardise(x, x), y.numpy()
    )
    np.testing.assert_allclose(model.weight.T.numpy(), ref.coef_, atol=1e-6)


def test_stratified_split_proportions() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1 + [3] * 2)
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(18))
    assert torch.bincount(labels[va], minlength=4).tolist() == [2, 1, 0, 1]
    _, va2 = stratified_split(labels, 0.2, seed=2)
    assert not torch.equal(va, va2)  # seeded, and the seed matters
    assert torch.equal(stratified_split(labels, 0.2, seed=1)[1], va)


def test_probe_picks_the_weight_decay_that_validates_best() -> None:
    x, y = _blobs(500, 10, 5, seed=2, noise=1.5)
    out = linear_probe(x[:300], y[:300], x[300:], y[300:], weight_decays=(1e-4, 1e-2, 10.0), seed=0)
    assert set(out["val_top1"]) == {"0.0001", "0.01", "10.0"}
    assert out["val_top1"][repr(out["weight_decay"])] == max(out["val_top1"].values())
    # λ = 10 shrinks W almost to zero: far worse than the others on validation.
    assert out["val_top1"]["10.0"] < out["val_top1"]["0.01"] - 20
    # Reported test accuracy is that of a refit on all of train with the chosen λ.
    model = fit_logistic(x[:300], y[:300], 5, out["weight_decay"])
    top1 = float((model.predict(x[300:]) == y[300:]).double().mean() * 100)
    assert out["top1"] == pytest.approx(top1, abs=1.0)
    assert out["top1"] <= out["top5"] == 100.0  # five classes


def test_single_weight_decay_skips_validation() -> None:
    x, y = _blobs(120, 4, 3, seed=3)
    out = linear_probe(x[:80], y[:80], x[80:], y[80:], weight_decays=(1e-3,))
    assert out["weight_decay"] == 1e-3 and out["val_top1"] == {}


def test_bad_input_is_named() -> None:
    x, y = _blobs(30, 4, 3, seed=4)
    with pytest.raises(ValueError, match="differ in D"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="test_labels must be"):
        linear_probe(x, y, x, y[:3])
    with pytest.raises(ValueError, match="weight_decays is empty"):
        linear_probe(x, y, x, y, weight_decays=())
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(y, 1.5, 0)
