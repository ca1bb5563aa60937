"""Distributed primitives that also work, unchanged, in a single process without a process group.

- :func:`concat_all_gather` / :func:`all_gather_with_grad`: the batch of every rank, concatenated in rank order.
- :func:`batch_shuffle` / :func:`batch_unshuffle`: MoCo's shuffling BN (He et al. 2020, §3.3). The key encoder's
  input is permuted across the global batch before its forward and the output permuted back, so that the
  BatchNorm statistics of a key never come from the same sub-batch as its query's, which would let the model
  "cheat" the pretext task through the statistics. In one process the permutation is local: it is a no-op for
  plain BN (whose statistics are permutation invariant) and what makes :class:`SplitBatchNorm2d` useful.
- :class:`SplitBatchNorm2d` / :func:`convert_to_split_bn`: BN statistics per contiguous split of the batch in
  one process, emulating ``num_splits`` GPUs with per-GPU BN, so single-process runs see the statistics (and
  with :func:`batch_shuffle`, the shuffling) of a multi-GPU run.

Every function returns samples in their original order; each rank must hold the same number of samples.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.errors import ConfigError

__all__ = [
    "SplitBatchNorm2d",
    "all_gather_with_grad",
    "batch_shuffle",
    "batch_unshuffle",
    "concat_all_gather",
    "convert_to_split_bn",
    "is_distributed",
    "rank",
    "shuffle_bn_active",
    "world_size",
]

log = logging.getLogger("invarlab.train")
_warned_plain_bn = False


def shuffle_bn_active(shuffle_bn: bool, bn_splits: int) -> bool:
    """Whether shuffling BN acts on the key batch: ``shuffle_bn`` and either several ranks or ``bn_splits > 1``.

    When it is requested but cannot act (one process, plain BN), warns once per process: every key is then
    normalised with the statistics of the same images as its query, the leak MoCo's §3.3 describes, and at CPU
    scale it costs most of what MoCo learns (docs/training.md, "Learning within the budget": kNN 22.6 with plain
    BN against 30.1 with ``bn_splits=4``, 1,500 quick-start steps)."""
    global _warned_plain_bn
    active = shuffle_bn and (world_size() > 1 or bn_splits > 1)
    if shuffle_bn and not active and not _warned_plain_bn:
        _warned_plain_bn = True
        log.warning(
            "method.bn_splits=1 in one process: shuffle-BN cannot act, so each key's BatchNorm statistics come "
            "from its query's images (MoCo 3.3's leak); set method.bn_splits=4 (or 2-8) to emulate per-GPU BN"
        )
    return active


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group; 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """``cat([x_0, x_1, ..., x_{W-1}], dim=0)`` of every rank's ``x`` (equal shapes), without gradient.

    Without a process group (or with one process) it returns ``x`` itself, detached: the same values and
    storage, and no gradient, as in the multi-process case.
    """
    if world_size() == 1:
        return x.detach()
    x = x.contiguous()
    out = torch.empty((world_size() * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x)
    return out


def all_gather_with_grad(x: Tensor) -> Tensor:
    """As :func:`concat_all_gather`, but differentiable: the gradient of the gathered tensor is summed over
    ranks and the slice of this rank flows back into ``x``. With every rank computing the same global loss and
    DDP averaging parameter gradients over W ranks, the W-fold sum and the 1/W average cancel, so the
    gradient is that of the global loss (SimCLR's global-batch negatives). ``x`` itself in one process.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather  # imported late: only needed with a group

    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A random permutation of the global batch; returns ``(this rank's share of it, idx_unshuffle)``.

    Distributed: every rank's ``x`` is gathered (``W·B`` samples), rank 0 draws ``perm`` and broadcasts it, and
    rank r keeps ``gathered[perm[r·B:(r+1)·B]]``. One process: ``x[perm]`` for a permutation of its B samples.
    ``idx_unshuffle = argsort(perm)`` undoes it in :func:`batch_unshuffle`. ``generator`` draws the permutation
    (every rank draws one, rank 0's is used), so a run stays reproducible from its seed.
    """
    b = x.shape[0]
    n = b * world_size()
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=device).to(x.device)
    if world_size() == 1:
        return x[perm], torch.argsort(perm)
    gathered = concat_all_gather(x)
    dist.broadcast(perm, src=0)  # every rank must use rank 0's permutation
    r = rank()
    return gathered[perm[r * b : (r + 1) * b]], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle`: row ``i`` of the result belongs to row ``i`` of the original ``x``.

    Distributed: gathers the shuffled outputs of every rank and keeps ``gathered[idx_unshuffle[r·B:(r+1)·B]]``.
    """
    if world_size() == 1:
        return x[idx_unshuffle.to(x.device)]
    b = x.shape[0]
    r = rank()
    return concat_all_gather(x)[idx_unshuffle[r * b : (r + 1) * b]]


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are computed per contiguous split of the batch.

    In training, the batch of N is cut into ``num_splits`` chunks of N / S consecutive samples (rows
    ``s·N/S .. (s+1)·N/S − 1`` form split s, as ``torch.chunk`` cuts) and each chunk is normalised with its own
    mean and (biased) variance, exactly as S GPUs with plain BN would. Running statistics are updated per
    split with the usual momentum rule and then averaged over the splits:

        running ← (1/S) Σ_s [ (1 − m) running + m stat_s ] = (1 − m) running + m · mean_s(stat_s)

    (``stat_s`` uses the unbiased variance, as BatchNorm's running variance does). Evaluation mode is plain
    BatchNorm with the running statistics. Parameter and buffer names are BatchNorm2d's, so state dicts and
    torchvision checkpoints interchange. With ``num_splits=1`` it is exactly ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        if num_splits < 1:
            raise ConfigError(f"num_splits (bn_splits) must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        n = x.shape[0]
        if n % s != 0:
            raise ConfigError(f"split BatchNorm needs a batch divisible by bn_splits={s}, got a batch of {n}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        # One fused batch_norm call per contiguous split: a split of a channels-last batch is itself
        # channels-last, so the output keeps the layout the next convolution wants. (Folding the splits into
        # channels, (N/S, S·C, H, W), is one call but copies the batch into and out of NCHW around it: 1.7x
        # slower quick-start MoCo steps with channels-last.)
        use_running = self.track_running_stats and self.running_mean is not None
        outs, means, variances = [], [], []
        for chunk in x.chunk(s):
            rm = self.running_mean.clone() if use_running else None
            rv = self.running_var.clone() if use_running else None
            outs.append(F.batch_norm(chunk, rm, rv, self.weight, self.bias, True, factor, self.eps))
            means.append(rm)
            variances.append(rv)
        if use_running:
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(dim=0))
                self.running_var.copy_(torch.stack(variances).mean(dim=0))
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def convert_to_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (in place, recursively) by a :class:`SplitBatchNorm2d`
    with the same parameters, buffers and settings; returns ``module`` (or the replacement, if ``module`` is
    itself a BatchNorm2d). ``num_splits=1`` leaves the module unchanged."""
    if num_splits < 1:
        raise ConfigError(f"num_splits (bn_splits) must be >= 1, got {num_splits}")
    if num_splits == 1:
        return module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm2d):
        new = SplitBatchNorm2d(
            module.num_features,
            num_splits,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        ).to(device=_device_of(module))
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_to_split_bn(child, num_splits))
    return module


def _device_of(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")
