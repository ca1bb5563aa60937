"""invarlab.distributed: single-process fallbacks, split BatchNorm against per-chunk BatchNorm, shuffling BN
order, and the collectives in a real two-process gloo group."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from invarlab.distributed import (
    SplitBatchNorm2d,
    all_gather_with_grad,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    convert_to_split_bn,
    is_distributed,
    rank,
    world_size,
)
from invarlab.errors import ConfigError
from invarlab.nets import build_backbone


def _randomise_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


def test_single_process_fallbacks() -> None:
    assert not is_distributed() and rank() == 0 and world_size() == 1
    x = torch.randn(4, 3, requires_grad=True)
    y = concat_all_gather(x)
    assert torch.equal(y, x) and not y.requires_grad
    assert all_gather_with_grad(x) is x
    g = torch.Generator().manual_seed(0)
    shuffled, idx = batch_shuffle(torch.arange(10.0)[:, None], g)
    assert not torch.equal(shuffled[:, 0], torch.arange(10.0))  # it did permute
    assert torch.equal(batch_unshuffle(shuffled, idx)[:, 0], torch.arange(10.0))


def test_split_bn_with_one_split_is_batch_norm() -> None:
    x = torch.randn(8, 4, 5, 5)
    bn, split = nn.BatchNorm2d(4), SplitBatchNorm2d(4, num_splits=1)
    _randomise_bn(bn, 1)
    split.load_state_dict(bn.state_dict())
    assert torch.allclose(split(x), bn(x))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(split, name), getattr(bn, name))
    assert convert_to_split_bn(bn, 1) is bn


@pytest.mark.parametrize("splits", [2, 4])
def test_split_bn_equals_batch_norm_per_contiguous_chunk(splits: int) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 4, 4, generator=g) * torch.arange(1.0, 9.0)[:, None, None, None]  # chunks differ
    split = SplitBatchNorm2d(3, num_splits=splits)
    _randomise_bn(split, 3)
    start = {k: v.clone() for k, v in split.state_dict().items()}
    xs = x.clone().requires_grad_(True)
    out = split(xs)
    chunk_outs, means, vars_ = [], [], []
    for chunk in x.chunk(splits):
        bn = nn.BatchNorm2d(3)
        bn.load_state_dict(start)
        chunk_outs.append(bn(chunk))
        means.append(bn.running_mean)
        vars_.append(bn.running_var)
    assert torch.allclose(out, torch.cat(chunk_outs), atol=1e-5)  # original order, per-chunk statistics
    assert torch.allclose(split.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(split.running_var, torch.stack(vars_).mean(0), atol=1e-6)
    assert int(split.num_batches_tracked) == 1
    # Gradients flow to the input and to the shared affine parameters.
    out.square().sum().backward()
    assert xs.grad is not None and split.weight.grad is not None and torch.isfinite(split.weight.grad).all()
    split.eval()
    assert torch.allclose(
        split(x), F.batch_norm(x, split.running_mean, split.running_var, split.weight, split.bias)
    )
    split.train()
    with pytest.raises(ConfigError, match="divisible"):
        split(torch.randn(splits + 1, 3, 2, 2))


def test_convert_to_split_bn_keeps_names_and_eval_outputs() -> None:
    net = build_backbone("resnet18", "cifar", 0.25)
    plain = build_backbone("resnet18", "cifar", 0.25)
    plain.load_state_dict(net.state_dict())
    convert_to_split_bn(net, 2)
    n_split = sum(isinstance(m, SplitBatchNorm2d) for m in net.modules())
    assert n_split == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) and n_split > 0
    assert net.state_dict().keys() == plain.state_dict().keys()
    net.eval(), plain.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(net(x), plain(x), atol=1e-6)


def test_shuffle_bn_returns_outputs_in_original_order() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 2, 3, 3, generator=g) + torch.arange(8.0)[:, None, None, None]
    # Plain BN is permutation invariant: shuffle -> BN -> unshuffle is exactly BN.
    bn = nn.BatchNorm2d(2)
    shuffled, idx = batch_shuffle(x, torch.Generator().manual_seed(5))
    assert torch.allclose(batch_unshuffle(bn(shuffled), idx), nn.BatchNorm2d(2)(x), atol=1e-6)
    # Split BN: row i of the result is sample i normalised with the statistics of the chunk it was shuffled
    # into; recompute that by hand from the same permutation.
    split = SplitBatchNorm2d(2, num_splits=2)
    shuffled, idx = batch_shuffle(x, torch.Generator().manual_seed(5))
    out = batch_unshuffle(split(shuffled), idx)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    ref = torch.empty_like(x)
    for chunk in perm.chunk(2):
        ref[chunk] = F.batch_norm(x[chunk], None, None, training=True)
    assert torch.allclose(out, ref, atol=1e-5)


# ------------------------------------------------------------------------------------- two-process gloo group
def _worker(r: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=world)
    try:
        assert is_distributed() and rank() == r and world_size() == world
        b = 3
        ids = torch.arange(r * b, (r + 1) * b, dtype=torch.float32)
        x = ids[:, None].repeat(1, 2)
        gathered = concat_all_gather(x)
        assert torch.equal(gathered[:, 0], torch.arange(world * b, dtype=torch.float32))  # rank order
        # Each rank seeds differently; rank 0's permutation must win everywhere.
        shuffled, idx = batch_shuffle(x, torch.Generator().manual_seed(100 + r))
        all_shuffled = concat_all_gather(shuffled)[:, 0]
        assert sorted(all_shuffled.tolist()) == list(range(world * b))  # a permutation of the global batch
        assert not torch.equal(all_shuffled, torch.arange(world * b, dtype=torch.float32))
        assert torch.equal(batch_unshuffle(shuffled, idx), x)  # back in this rank's original order
        # Differentiable gather: d/dx of sum(w * gather(x)) summed over ranks is world * w[own slice].
        xg = x.clone().requires_grad_(True)
        w = torch.arange(world * b * 2, dtype=torch.float32).view(world * b, 2)
        (all_gather_with_grad(xg) * w).sum().backward()
        assert torch.allclose(xg.grad, world * w[r * b : (r + 1) * b])
    finally:
        dist.destroy_process_group()


def test_collectives_in_a_two_process_gloo_group(tmp_path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    init_file = os.path.join(tmp_path, "store")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    # fork: the children need no fresh import of torch (spawn costs seconds per child on two cores). A deadline
    # guards against a child stuck after fork; the workers are this test's own processes.
    ctx = mp.start_processes(_worker, args=(2, init_file), nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail("gloo workers did not finish within 60 s")


def test_shuffle_bn_in_one_process_with_plain_bn_warns_once(caplog, monkeypatch) -> None:
    import invarlab.distributed as distributed

    monkeypatch.setattr(distributed, "_warned_plain_bn", False)
    with caplog.at_level("WARNING", logger="invarlab.train"):
        assert distributed.shuffle_bn_active(True, 4) is True  # split BN: shuffling acts, nothing to say
        assert distributed.shuffle_bn_active(False, 1) is False  # not asked for: nothing to say
        assert not caplog.records
        assert distributed.shuffle_bn_active(True, 1) is False
        assert distributed.shuffle_bn_active(True, 1) is False
    warnings = [r for r in caplog.records if "bn_splits" in r.getMessage()]
    assert len(warnings) == 1 and "method.bn_splits=4" in warnings[0].getMessage()
