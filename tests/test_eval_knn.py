"""invarlab.eval.knn against scikit-learn's KNeighborsClassifier (cosine, brute force, the same exp(s/T)
weights), a hand-computed example, and the training monitor (which must delegate to it)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from invarlab.eval.knn import knn_accuracy, knn_classify, knn_scores, topk_accuracy
from invarlab.train.monitor import knn_predict


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small tensors on a shared 2-core machine: a second OpenMP thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fixture(n: int, q: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    yq = torch.randint(0, classes, (q,), generator=g)
    x = centres[y] + 1.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    xq = centres[yq] + 1.5 * torch.randn(q, d, generator=g, dtype=torch.float64)
    return x, y, xq, yq


@pytest.mark.parametrize(("k", "temperature", "chunk"), [(7, 0.1, None), (20, 0.5, 13), (1, 0.07, 4)])
def test_scores_match_sklearn_cosine_knn_with_exp_weights(
    k: int, temperature: float, chunk: int | None
) -> None:
    x, y, xq, _ = _fixture(150, 40, 12, 5, seed=k)
    # sklearn's cosine distance is 1 - cos, so exp((1 - dist) / T) is the same weight as exp(cos / T).
    ref = KNeighborsClassifier(
        n_neighbors=k,
        metric="cosine",
        algorithm="brute",
        weights=lambda dist: np.exp((1 - dist) / temperature),
    ).fit(x.numpy(), y.numpy())
    scores = knn_scores(x, y, xq, k=k, temperature=temperature, chunk=chunk).double()
    proba = scores / scores.sum(dim=1, keepdim=True)
    np.testing.assert_allclose(proba.numpy(), ref.predict_proba(xq.numpy()), atol=1e-5)
    pred = knn_classify(x, y, xq, k=k, temperature=temperature, chunk=chunk)
    assert (pred.numpy() == ref.predict(xq.numpy())).all()


@pytest.mark.parametrize("bank_chunk", [7, 20, 149])
def test_a_bank_in_chunks_gives_the_one_pass_scores_also_from_float16(bank_chunk: int) -> None:
    x, y, xq, _ = _fixture(150, 40, 12, 5, seed=3)
    # The same neighbours; their weights are summed in another order (float32: relative 1e-5).
    one_pass = knn_scores(x, y, xq, k=20, temperature=0.1)
    chunked = knn_scores(x, y, xq, k=20, temperature=0.1, bank_chunk=bank_chunk)
    torch.testing.assert_close(chunked, one_pass, rtol=1e-5, atol=0)
    half = x.half()
    torch.testing.assert_close(
        knn_scores(half, y, xq, k=20, temperature=0.1, bank_chunk=bank_chunk),
        knn_scores(half, y, xq, k=20, temperature=0.1),
        rtol=1e-5,
        atol=0,
    )


def test_hand_example() -> None:
    # Train points on the unit circle at 0, 60, 180 and 90 degrees with classes 0, 0, 1, 1 (scaled: scale must
    # not matter). The query at 10 degrees, k = 3: neighbours 0 deg (cos 10), 60 deg (cos 50), 90 deg (cos 80).
    ang = torch.tensor([0.0, 60.0, 180.0, 90.0], dtype=torch.float64).deg2rad()
    x = torch.stack([ang.cos(), ang.sin()], 1) * torch.tensor(
        [[1.0], [3.0], [0.5], [2.0]], dtype=torch.float64
    )
    y = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[math.cos(math.radians(10)), math.sin(math.radians(10))]], dtype=torch.float64)
    t = 0.5
    c = [math.cos(math.radians(a)) for a in (10, 50, 80)]
    expected = [math.exp(c[0] / t) + math.exp(c[1] / t), math.exp(c[2] / t), 0.0]
    scores = knn_scores(x, y, q, k=3, temperature=t, num_classes=3)
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert knn_classify(x, y, q, k=3, temperature=t).tolist() == [0]
    # With k = 1 only the 0-degree point votes; with a tiny temperature class 0 still wins.
    assert knn_classify(x, y, q, k=1, temperature=0.01).tolist() == [0]


def test_ties_go_to_the_lower_class_and_k_is_capped() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([3, 1])
    scores = knn_scores(x, y, torch.tensor([[1.0, 0.0]]), k=50)  # k capped at N = 2
    assert scores[0, 1] == scores[0, 3] > 0
    assert knn_classify(x, y, torch.tensor([[1.0, 0.0]]), k=50).tolist() == [1]


def test_accuracy_top1_top5_against_direct_count() -> None:
    x, y, xq, yq = _fixture(200, 60, 8, 10, seed=3)
    scores = knn_scores(x, y, xq, k=15, temperature=0.2, num_classes=10)
    order = scores.argsort(dim=1, descending=True)
    top1 = 100 * np.mean([int(order[i, 0]) == int(yq[i]) for i in range(60)])
    top5 = 100 * np.mean([int(yq[i]) in order[i, :5].tolist() for i in range(60)])
    acc = knn_accuracy(x, y, xq, yq, k=15, temperature=0.2)
    assert acc == pytest.approx({"top1": top1, "top5": top5})
    assert 0 < acc["top1"] < acc["top5"] < 100
    # Fewer than five classes: every label is in the top 5.
    assert topk_accuracy(torch.rand(4, 3), torch.tensor([0, 1, 2, 0]))["top5"] == 100.0


def test_monitor_delegates_to_eval_knn() -> None:
    x, y, xq, _ = _fixture(120, 30, 6, 4, seed=9)
    expected = knn_classify(x, y, xq, k=10, temperature=0.3, num_classes=4)
    assert torch.equal(knn_predict(x, y, xq, 4, k=10, temperature=0.3, chunk=7), expected)
    assert knn_predict(x[:0], y[:0], xq, 4).tolist() == [0] * 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"num_classes": 2}, "num_classes=2"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    x, y, xq, _ = _fixture(20, 5, 4, 4, seed=1)
    with pytest.raises(ValueError, match=match):
        knn_scores(x, y, xq, **kwargs)


def test_bad_shapes_and_labels_are_named() -> None:
    x, y, xq, _ = _fixture(20, 5, 4, 3, seed=1)
    with pytest.raises(ValueError, match="same D"):
        knn_scores(x, y, xq[:, :3])
    with pytest.raises(ValueError, match="train_labels must be"):
        knn_scores(x, y[:5], xq)
    with pytest.raises(ValueError, match=">= 0"):
        knn_scores(x, torch.full((20,), -1), xq)
    with pytest.raises(ValueError, match="integer class"):
        knn_scores(x, y.float(), xq)
