"""invarlab.losses against independent oracles: direct log-softmax formulas, hand-computed values and loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invarlab.losses import info_nce, info_nce_logits, multi_positive_info_nce, nt_xent
from invarlab.methods.moco import moco_logits, moco_loss


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_info_nce_with_negatives_equals_direct_log_softmax() -> None:
    q, k, u = _unit(6, 5, seed=1), _unit(6, 5, seed=2), _unit(9, 5, seed=3)
    t = 0.2
    expected = 0.0
    for b in range(6):
        pos = float(q[b] @ k[b]) / t
        negs = [float(q[b] @ u[n]) / t for n in range(9)]
        expected -= pos - math.log(math.exp(pos) + sum(math.exp(v) for v in negs))
    expected /= 6
    assert info_nce(q, k, u, t).item() == pytest.approx(expected, rel=1e-12)


def test_info_nce_in_batch_negatives_are_the_other_positives() -> None:
    q, k = _unit(5, 4, seed=4), _unit(5, 4, seed=5)
    t = 0.5
    logits = q @ k.T / t
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    assert torch.allclose(info_nce(q, k, None, t), expected)
    logits_out, target = info_nce_logits(q, k, None)
    assert torch.equal(target, torch.arange(5))
    assert torch.allclose(logits_out, q @ k.T)


def test_info_nce_hand_computed_two_samples() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    k = q.clone()
    # In-batch, T = 1: each row's logits are [1, 0] (positive first after reordering), so
    # loss = -log(e / (e + 1)) = log(1 + e^-1) for both samples.
    assert info_nce(q, k, None, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)
    # One negative u = (-1, 0), T = 0.5: sample 1 has logits [2, -2], sample 2 has [2, 0].
    u = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    expected = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-2))) / 2
    assert info_nce(q, k, u, 0.5).item() == pytest.approx(expected, rel=1e-12)


def test_moco_loss_is_cross_entropy_on_l_pos_l_neg() -> None:
    q, k, queue = _unit(8, 16, seed=6), _unit(8, 16, seed=7), _unit(32, 16, seed=8)
    t = 0.2
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.T
    reference = F.cross_entropy(torch.cat([l_pos, l_neg], 1) / t, torch.zeros(8, dtype=torch.long))
    loss, logits = moco_loss(q, k, queue, t)
    assert torch.allclose(loss, reference)
    assert torch.allclose(logits, torch.cat([l_pos, l_neg], 1) / t)
    assert torch.allclose(info_nce(q, k, queue, t), reference)
    lp, ln = moco_logits(q, k, queue)
    assert lp.shape == (8, 1) and ln.shape == (8, 32)


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        p = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i)
        total -= float(z[i] @ z[p]) / t - math.log(denom)
    return total / n2


def test_nt_xent_matches_loop_reference_and_normalises() -> None:
    g = torch.Generator().manual_seed(9)
    z1 = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3  # not normalised: nt_xent normalises
    z2 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5):
        assert nt_xent(z1, z2, t).item() == pytest.approx(_nt_xent_loop(z1, z2, t), rel=1e-10)


def test_symmetric_in_batch_info_nce_is_not_nt_xent() -> None:
    # Documented difference: the symmetrised in-batch InfoNCE has B - 1 negatives per anchor, NT-Xent 2B - 2.
    z1, z2 = _unit(6, 8, seed=10), _unit(6, 8, seed=11)
    sym = (info_nce(z1, z2, None, 0.5) + info_nce(z2, z1, None, 0.5)) / 2
    assert nt_xent(z1, z2, 0.5).item() > sym.item()


def test_multi_positive_matches_loop_and_reduces_to_info_nce() -> None:
    q, keys = _unit(4, 6, seed=12), _unit(10, 6, seed=13)
    t = 0.3
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[0, [1, 3]] = True
    mask[1, 5] = True
    mask[3, [0, 2, 9]] = True  # row 2 has no positive: excluded from the mean
    logits = q @ keys.T / t
    per_row = []
    for b in range(4):
        pos = mask[b].nonzero().flatten().tolist()
        if pos:
            lse = math.log(sum(math.exp(float(v)) for v in logits[b]))
            per_row.append(-sum(float(logits[b, n]) - lse for n in pos) / len(pos))
    expected = sum(per_row) / len(per_row)
    assert multi_positive_info_nce(q, keys, mask, t).item() == pytest.approx(expected, rel=1e-12)

    # One positive per row, placed in column 0 of [k; U]: exactly info_nce.
    k, u = _unit(4, 6, seed=14), _unit(7, 6, seed=15)
    one = torch.zeros(4, 8, dtype=torch.bool)
    one[:, 0] = True
    per_query = []
    for b in range(4):
        keys_b = torch.cat([k[b : b + 1], u])
        per_query.append(multi_positive_info_nce(q[b : b + 1], keys_b, one[b : b + 1, :8], t))
    assert torch.allclose(torch.stack(per_query).mean(), info_nce(q, k, u, t))


def test_multi_positive_logits_mask_and_no_positive() -> None:
    q, keys = _unit(3, 4, seed=16), _unit(3, 4, seed=17)
    pos = torch.eye(3, dtype=torch.bool).roll(1, dims=1)
    keep = ~torch.eye(3, dtype=torch.bool)  # drop key b from query b's softmax (SupCon's self-exclusion)
    logits = q @ keys.T / 0.5
    expected = 0.0
    for b in range(3):
        others = [j for j in range(3) if j != b]
        lse = math.log(sum(math.exp(float(logits[b, j])) for j in others))
        expected -= float(logits[b, (b + 1) % 3]) - lse
    expected /= 3
    assert multi_positive_info_nce(q, keys, pos, 0.5, keep).item() == pytest.approx(expected, rel=1e-12)

    qg = q.clone().requires_grad_(True)
    zero = multi_positive_info_nce(qg, keys, torch.zeros(3, 3, dtype=torch.bool), 0.5)
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(qg.grad, torch.zeros_like(qg))


def test_losses_are_differentiable_and_validate_inputs() -> None:
    q = _unit(4, 8, seed=18).requires_grad_(True)
    k, u = _unit(4, 8, seed=19), _unit(5, 8, seed=20)
    info_nce(q, k, u, 0.2).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, k, u, 0.0)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(q, k, u[:, :3], 0.2)
    with pytest.raises(ValueError, match="query and positive"):
        nt_xent(q, k[:3], 0.2)
