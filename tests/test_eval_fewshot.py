"""invarlab.eval.fewshot: confidence-interval coverage in simulation (of the interval alone and of the whole
few-shot pipeline), batched trials equal trials trained alone, accuracy on separable data, episode sampling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invarlab.eval.fewshot import few_shot, few_shot_suite, few_shot_trials, mean_ci, train_batched_logistic


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small tensors on a shared 2-core machine: a second OpenMP thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(
    classes: int, per_class: int, d: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    return centres[y] + spread * torch.randn(len(y), d, generator=g), y


def test_mean_ci_formula_and_coverage_of_normal_samples() -> None:
    v = [1.0, 2.0, 4.0]
    mean, half = mean_ci(v)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.302652729911275 * np.std(v, ddof=1) / np.sqrt(3))  # t_{0.975, 2}
    assert mean_ci(v, ci="normal")[1] == pytest.approx(1.959963984540054 * np.std(v, ddof=1) / np.sqrt(3))
    assert np.isnan(mean_ci([3.0])[1])
    # 2,000 simulated experiments of 5 trials each, true mean 10: the t interval covers it 95% of the time,
    # the normal one (too narrow for 5 trials) about 88%.
    rng = np.random.default_rng(0)
    samples = rng.normal(10.0, 3.0, size=(2000, 5))
    cover_t = np.mean([abs(m - 10) <= h for m, h in (mean_ci(s) for s in samples)])
    cover_z = np.mean([abs(m - 10) <= h for m, h in (mean_ci(s, ci="normal") for s in samples)])
    assert 0.935 <= cover_t <= 0.965
    assert 0.85 <= cover_z <= 0.90


def test_pipeline_interval_covers_the_expected_accuracy() -> None:
    # The "true" expected few-shot accuracy is estimated from 2,000 trials (its standard error is 1/14 of a
    # 10-trial interval's half width); 200 independent experiments of 10 trials each should cover it ~95%.
    x, y = _clusters(20, 30, 8, spread=1.0, seed=0)
    kwargs = dict(ways=5, shots=1, queries=10, iters=50)
    truth = few_shot_trials(x, y, trials=2000, seed=1, **kwargs)[0].mean().item()
    acc = few_shot_trials(x, y, trials=2000, seed=2, **kwargs)[0].view(200, 10)
    assert 40 < truth < 90  # neither trivial nor hopeless: trial accuracies vary
    covered = [abs(mean_ci(row)[0] - truth) <= mean_ci(row)[1] for row in acc]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_batched_trials_equal_trials_trained_alone() -> None:
    # 5-way 5-shot: 25 support images <= minibatch 64, so training is deterministic full-batch Adam.
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(3, 25, 32, generator=g, dtype=torch.float64), dim=2)  # separable: 25 < 32
    y = torch.arange(5).repeat_interleave(5).expand(3, -1)
    w, b = train_batched_logistic(x, y, 5)
    for t in range(3):
        w1, b1 = train_batched_logistic(x[t : t + 1], y[t : t + 1], 5)
        assert torch.allclose(w[t], w1[0], atol=1e-12) and torch.allclose(b[t], b1[0], atol=1e-12)
    # And training really fits: every support image is classified correctly.
    assert torch.equal((torch.bmm(x, w) + b[:, None]).argmax(2), y)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_hand_written_gradient_matches_autograd_adam(weight_decay: float) -> None:
    # Reference: one trial, the loss written as F.cross_entropy, gradients by autograd, torch's plain Adam.
    g = torch.Generator().manual_seed(10)
    x = torch.randn(1, 12, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (1, 12), generator=g)
    w = torch.zeros(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.03)
    for _ in range(40):
        loss = F.cross_entropy(x[0] @ w + b, y[0]) + 0.5 * weight_decay * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w_ours, b_ours = train_batched_logistic(x, y, 3, iters=40, weight_decay=weight_decay)
    assert torch.allclose(w_ours[0], w.detach(), atol=1e-10)
    assert torch.allclose(b_ours[0], b.detach(), atol=1e-10)


def test_minibatches_when_the_support_set_is_large() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = _clusters(4, 50, 6, spread=0.3, seed=4)
    w, b = train_batched_logistic(x[None], y[None], 4, batch_size=16, generator=g)
    assert (((x @ w[0]) + b[0]).argmax(1) == y).double().mean() > 0.97


def test_separable_data_is_classified_almost_perfectly() -> None:
    x, y = _clusters(12, 25, 16, spread=0.05, seed=5)
    for ways, shots in [(5, 1), (5, 5), ("all", 1)]:
        out = few_shot(x, y, ways=ways, shots=shots, trials=8, seed=0)
        assert out["mean"] > 98, (ways, shots, out)
        assert out["ways"] == (12 if ways == "all" else 5) and out["trials"] == 8
    # Pure noise: about chance (20% for 5-way).
    noise = torch.randn(300, 16, generator=torch.Generator().manual_seed(6))
    out = few_shot(noise, y, ways=5, shots=5, trials=30, seed=0)
    assert abs(out["mean"] - 20) < 2.5 * out["ci95"] + 2


def test_query_modes_and_separate_query_pool() -> None:
    x, y = _clusters(10, 20, 8, spread=0.5, seed=7)
    # Separate pools: support from even rows, queries from odd rows; with queries=None every query image of the
    # trial's classes is scored, so all-way scores the whole query pool and every trial sees the same queries.
    out = few_shot(
        x[::2], y[::2], "all", 5, queries=None, trials=4, query_features=x[1::2], query_labels=y[1::2]
    )
    assert out["ways"] == 10 and out["mean"] > 80
    rest = few_shot(x, y, 5, 2, queries=None, trials=4)  # the 18 other images of each class are the queries
    assert rest["mean"] > 80
    # Same seed, same result; another seed, other episodes.
    assert few_shot(x, y, trials=5, seed=1) == few_shot(x, y, trials=5, seed=1)
    a = few_shot_trials(x, y, trials=5, seed=1)[0]
    assert not torch.equal(a, few_shot_trials(x, y, trials=5, seed=2)[0])


def test_suite_keys() -> None:
    x, y = _clusters(6, 20, 4, spread=0.5, seed=8)
    out = few_shot_suite(x, y, trials=3, iters=20)
    assert set(out) == {"5way_1shot", "5way_5shot", "allway_1shot", "allway_5shot"}
    assert out["allway_5shot"]["ways"] == 6


def test_bad_input_is_named() -> None:
    x, y = _clusters(4, 3, 4, spread=0.5, seed=9)
    with pytest.raises(ValueError, match="5-way needs at least 5 classes"):
        few_shot(x, y, ways=5, shots=1, queries=2)
    with pytest.raises(ValueError, match="2 query images; 0 have them"):
        few_shot(x, y, ways=2, shots=2, queries=2)
    with pytest.raises(ValueError, match="query_labels"):
        few_shot(x, y, ways=2, query_features=x)
    with pytest.raises(ValueError, match="integer classes"):
        few_shot(x, y.float(), ways=2)
