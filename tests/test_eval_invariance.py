"""invarlab.eval.invariance: RIS against a literal loop implementation of PAPERS.md §1.3, the section's sanity
values, and its invariances (neuron order, positive per-neuron scale); factor probes and factor bins."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invarlab.eval.invariance import (
    azimuth_bins,
    elevation_bins,
    factor_probe,
    firing_percentile,
    light_direction_bins,
    ris,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small tensors on a shared 2-core machine: a second OpenMP thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ris_loops(
    feat: np.ndarray, sets: np.ndarray, classes: np.ndarray, ks: tuple[int, ...]
) -> dict[int, float]:
    """PAPERS.md §1.3 written out with Python loops over neurons, sets and classes (slow; small inputs only)."""
    n, d = feat.shape
    class_list = sorted(set(classes.tolist()))
    p = min((1 - 1 / len(class_list)) * 100, 95)
    idx = int(n * p // 100)
    tau_pos = [sorted(feat[:, j])[idx] for j in range(d)]
    tau_neg = [sorted(feat[:, j], reverse=True)[idx] for j in range(d)]
    g = [sum(1 for x in range(n) if feat[x, j] >= tau_pos[j]) / n for j in range(d)]
    members: dict[int, list[int]] = {}
    for x, s in enumerate(sets.tolist()):
        members.setdefault(s, []).append(x)
    score = {}
    for c in class_list:
        inv = []
        for j in range(d):
            total, fired = 0.0, 0
            for rows in members.values():
                if classes[rows[0]] != c or len(rows) < 3:
                    continue
                f_pos = sum(1 for x in rows if feat[x, j] > tau_pos[j])
                f_neg = sum(1 for x in rows if feat[x, j] < tau_neg[j])
                f = max(f_pos, f_neg)
                if f > 0:
                    total += f / len(rows)
                    fired += 1
            inv.append(total / (fired + 1e-20) / g[j])
        score[c] = sorted(inv, reverse=True)
    return {k: (100 - p) * float(np.mean([sum(score[c][:k]) / k for c in class_list])) for k in ks}


def _small_case(seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 9, (40,), generator=g)  # sizes 1-8: some sets are skipped (< 3)
    set_class = torch.randint(0, 6, (40,), generator=g) * 10
    set_class[:2] = 99  # class 99 holds only sets 0 and 1; make both small, so the class contributes 0
    sizes[:2] = 2
    sets = torch.repeat_interleave(torch.arange(40) * 7 + 3, sizes)  # ids need not be contiguous
    classes = torch.repeat_interleave(set_class, sizes)
    feat = torch.randn(len(sets), 16, generator=g, dtype=torch.float64) + torch.randn(
        40, 16, generator=g, dtype=torch.float64
    ).repeat_interleave(sizes, 0)
    if ties:
        feat = feat.mul(1.5).round()  # integer values: >= and > differ, thresholds are tied
    perm = torch.randperm(len(sets), generator=g)  # images of a set need not be adjacent
    return feat[perm], sets[perm], classes[perm]


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True)])
def test_matches_loop_reference(seed: int, ties: bool) -> None:
    feat, sets, classes = _small_case(seed, ties)
    expected = ris_loops(feat.numpy(), sets.numpy(), classes.numpy(), (1, 3, 7))
    got = ris(feat, sets, classes, ks=(1, 3, 7))
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-9)
    # Blocks and the candidate pre-selection only change speed.
    assert ris(feat, sets, classes, ks=(1, 3, 7), block=5, sample=10) == pytest.approx(got, abs=1e-12)


def test_candidate_preselection_falls_back_when_the_sample_misleads() -> None:
    # Every 6th image (the sampled rows with sample=100 of N=600) is far below the rest on neuron 0, so the
    # sample's bound keeps too few candidates and the exact threshold must be used.
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(600, 4, generator=g, dtype=torch.float64)
    feat[::6, 0] -= 100.0
    feat[1::6, 1] += 100.0  # and one neuron whose negative tail the sample misses
    sets = torch.arange(600) // 6
    classes = sets // 5
    exact = ris_loops(feat.numpy(), sets.numpy(), classes.numpy(), (1, 2))
    assert ris(feat, sets, classes, ks=(1, 2), sample=100) == pytest.approx(exact, abs=1e-9)


def test_no_set_large_enough_scores_zero() -> None:
    feat = torch.randn(40, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sets = torch.arange(40) // 2  # every set has 2 images: all skipped
    assert (
        ris(feat, sets, sets // 4, ks=(1, 3))
        == ris_loops(feat.numpy(), sets.numpy(), (sets // 4).numpy(), (1, 3))
        == {1: 0.0, 3: 0.0}
    )


def _sets_of_12(d: int, identical: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sets = torch.arange(1000).repeat_interleave(12)
    feat = torch.randn(1000, d, generator=g)[sets] if identical else torch.randn(12000, d, generator=g)
    return feat, sets


def test_identical_features_within_sets_score_100() -> None:
    feat, sets = _sets_of_12(2048, identical=True, seed=0)
    assert ris(feat, sets, sets) == pytest.approx({10: 100.0, 25: 100.0}, abs=1e-9)


def test_identical_features_with_few_neurons_score_92_8_at_top_25() -> None:
    # About 10% of 256 neurons fire in a set (5% per sign), so the top 25 include neurons that never fire.
    feat, sets = _sets_of_12(256, identical=True, seed=1)
    got = ris(feat, sets, None)
    assert got[25] == pytest.approx(92.8, abs=0.5)
    assert got[10] > 99.0


def test_iid_gaussian_features() -> None:
    feat, sets = _sets_of_12(2048, identical=False, seed=2)
    got = ris(feat, sets, sets)
    assert got[10] == pytest.approx(32.6, abs=0.5)
    assert got[25] == pytest.approx(28.3, abs=0.5)


def test_firing_percentile() -> None:
    assert firing_percentile(1000) == 95
    assert firing_percentile(12) == pytest.approx(100 - 100 / 12)
    assert firing_percentile(2) == 50


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scales=st.lists(st.floats(1e-3, 1e3), min_size=16, max_size=16),
    permute=st.booleans(),
)
def test_neuron_order_and_positive_scale_do_not_matter(seed: int, scales: list[float], permute: bool) -> None:
    feat, sets, classes = _small_case(seed, ties=False)
    base = ris(feat, sets, classes, ks=(2, 5))
    changed = feat * torch.tensor(scales, dtype=torch.float64)
    if permute:
        changed = changed[:, torch.randperm(16, generator=torch.Generator().manual_seed(seed))]
    assert ris(changed, sets, classes, ks=(2, 5)) == pytest.approx(base, rel=1e-12)


def test_bad_input_is_named() -> None:
    feat, sets, classes = _small_case(0, ties=False)
    with pytest.raises(ValueError, match="ks must lie in"):
        ris(feat, sets, classes, ks=(17,))
    with pytest.raises(ValueError, match="set_ids must be"):
        ris(feat, sets[:-1], classes)
    mixed = classes.clone()
    rows = (sets == 3 + 7 * 5).nonzero().squeeze(1)  # set 5 has sizes[5] >= 1 images; make one of two differ
    mixed[rows[-1]] = 12345
    mixed[rows[0]] = 54321
    with pytest.raises(ValueError, match="set 38 holds images of different classes"):
        ris(feat, sets, mixed, ks=(2,))
    with pytest.raises(ValueError, match="integer ids"):
        ris(feat, sets.double(), classes)


# ----------------------------------------------------------------------------------------------- factor probes


def test_bins_hand_values() -> None:
    az = torch.tensor([0.0, 44.9, 45.0, 359.9, 360.0, -10.0, 725.0])
    assert azimuth_bins(az).tolist() == [0, 0, 1, 7, 0, 7, 0]
    assert azimuth_bins(az, n_bins=4).tolist() == [0, 0, 0, 3, 0, 3, 0]
    el = torch.tensor([-95.0, -90.0, 0.0, 5.0, 40.0, 89.9, 90.0])
    assert elevation_bins(el).tolist() == [0, 0, 6, 6, 8, 11, 11]
    light = light_direction_bins(torch.tensor([10.0, 100.0]), torch.tensor([20.0, 80.0]))
    assert light.tolist() == [0 * 6 + 3, 2 * 6 + 5]


def _factor_data(decodable: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    factor = (
        torch.multinomial(torch.tensor([0.4, 0.2, 0.2, 0.1, 0.1]), 600, replacement=True, generator=g) * 3
    )
    groups = torch.arange(600) // 10
    signal = torch.randn(5, 12, generator=g)[factor // 3] if decodable else 0.0
    feats = 1.5 * signal + torch.randn(600, 12, generator=g)
    return feats, factor, groups


def test_factor_probe_decodes_an_encoded_factor() -> None:
    feats, factor, _ = _factor_data(decodable=True, seed=0)
    out = factor_probe(feats, factor, weight_decays=(1e-3,))
    assert out["num_values"] == 5 and out["n_train"] + out["n_test"] == 600
    assert out["top1"] > 90
    # Chance is the majority value's share of the test split (value 0, drawn with probability 0.4).
    assert 30 < out["chance"] < 50


def test_factor_probe_is_near_chance_without_signal() -> None:
    feats, factor, groups = _factor_data(decodable=False, seed=1)
    out = factor_probe(feats, factor, groups=groups, weight_decays=(1e-1,), seed=2)
    assert out["n_test"] % 10 == 0  # whole groups of 10 went to test
    assert abs(out["top1"] - out["chance"]) < 12


def test_factor_probe_bad_input() -> None:
    feats, factor, _ = _factor_data(decodable=True, seed=0)
    with pytest.raises(ValueError, match="bin continuous factors"):
        factor_probe(feats, factor.double())
    with pytest.raises(ValueError, match="single value"):
        factor_probe(feats, torch.zeros(600, dtype=torch.long))
