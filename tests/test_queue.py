"""invarlab.queue: FIFO order with wrap-around, labels, state dicts and aligned named queues."""

from __future__ import annotations

import pytest
import torch

from invarlab.errors import ConfigError
from invarlab.queue import FeatureQueue, QueueSet


def _coded(start: int, n: int, dim: int = 3) -> torch.Tensor:
    """Keys whose every entry is their global arrival index, so a row says which key it is."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, dim).clone()


def _ids(rows: torch.Tensor) -> list[int]:
    return rows[:, 0].long().tolist()


@pytest.mark.parametrize(("size", "batch", "steps"), [(10, 4, 5), (7, 3, 6), (8, 8, 3), (5, 2, 1)])
def test_wrap_around_keeps_the_last_keys_once_oldest_overwritten_first(
    size: int, batch: int, steps: int
) -> None:
    q = FeatureQueue(size, 3)
    for s in range(steps):
        q.enqueue(_coded(s * batch, batch))
    total = steps * batch
    kept = list(range(max(0, total - size), total))
    assert sorted(_ids(q.features)) == kept  # every one of the last min(total, K) keys, exactly once
    assert _ids(q.chronological()) == kept  # oldest to newest
    # Slot order: key j sits in slot j mod K (writes start at slot 0 and wrap).
    for slot, key in enumerate(_ids(q.features)):
        assert key % size == slot
    assert int(q.ptr) == total % size and q.num_valid == min(total, size) and int(q.total) == total


def test_enqueue_more_than_size_keeps_the_newest() -> None:
    q = FeatureQueue(4, 3)
    q.enqueue(_coded(0, 3))
    q.enqueue(_coded(3, 9))  # keys 3..11: only 8..11 survive
    assert _ids(q.chronological()) == [8, 9, 10, 11]
    assert int(q.ptr) == 12 % 4


def test_labels_travel_with_keys() -> None:
    q = FeatureQueue(5, 3, with_labels=True)
    q.enqueue(_coded(0, 3), torch.tensor([10, 11, 12]))
    q.enqueue(_coded(3, 4))  # no labels: stored as -1
    assert _ids(q.features) == [5, 6, 2, 3, 4]
    assert q.feature_labels.tolist() == [-1, -1, 12, -1, -1]
    with pytest.raises(ValueError, match="no labels"):
        _ = FeatureQueue(5, 3).feature_labels


def test_state_dict_round_trip_resumes_identically() -> None:
    a = FeatureQueue(6, 3, with_labels=True)
    a.enqueue(_coded(0, 4), torch.arange(4))
    assert set(a.state_dict()) == {"queue", "labels", "ptr", "count", "total"}
    b = FeatureQueue(6, 3, with_labels=True)
    b.load_state_dict(a.state_dict())
    for q in (a, b):
        q.enqueue(_coded(4, 4), torch.arange(4, 8))
    assert torch.equal(a.queue, b.queue) and torch.equal(a.labels, b.labels)
    assert int(b.ptr) == 2 and b.num_valid == 6


def test_random_init_is_full_of_unit_vectors_and_features_are_views() -> None:
    g = torch.Generator().manual_seed(0)
    q = FeatureQueue(16, 8, init="random", generator=g)
    assert q.is_full and q.num_valid == 16
    assert torch.allclose(q.features.norm(dim=1), torch.ones(16))
    assert q.features.data_ptr() == q.queue.data_ptr()
    with pytest.raises(ConfigError):
        FeatureQueue(16, 8, init="zeros")


def test_enqueue_detaches_and_casts() -> None:
    q = FeatureQueue(4, 2)
    x = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    q.enqueue(x * 2)
    assert q.queue.dtype == torch.float32 and not q.queue.requires_grad
    with pytest.raises(ValueError, match="keys must be"):
        q.enqueue(torch.ones(2, 3))


def test_queue_set_keeps_named_queues_aligned() -> None:
    qs = QueueSet(5, {"head": 3, "backbone": 6}, with_labels=True)
    for s in range(3):
        qs.enqueue(
            {"head": _coded(s * 2, 2, 3), "backbone": _coded(s * 2, 2, 6)}, torch.arange(s * 2, s * 2 + 2)
        )
    assert _ids(qs["head"].features) == _ids(qs["backbone"].features)
    assert qs["head"].feature_labels.tolist() == _ids(qs["backbone"].features)
    with pytest.raises(ValueError, match="exactly"):
        qs.enqueue({"head": _coded(0, 2, 3)})
    with pytest.raises(ValueError, match="same number"):
        qs.enqueue({"head": _coded(0, 2, 3), "backbone": _coded(0, 3, 6)})
