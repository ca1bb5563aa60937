"""The data order of a run: a seeded permutation per epoch, cut into global batches, shared out by rank.

A pure function of ``(seed, epoch, batch position)``, so a resumed run starts exactly where the interrupted one
stopped (``start``) without reading the batches before it, and ``N`` processes together see the same global
batches as one process with the same global batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from invarlab.train.util import mix_seed

__all__ = ["EpochBatchSampler"]


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's index batches of one epoch, from batch ``start`` on.

    The epoch's order is ``randperm(n)`` from a generator seeded by ``(seed, epoch)``; global batch ``i`` is
    ``perm[i B : (i + 1) B]`` (the incomplete tail is dropped) and rank ``r`` takes its ``r``-th contiguous
    part of ``B / world_size`` indices.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.start = rank, world_size, start
        self.per_rank = batch_size // world_size
        self.num_batches = n // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, "order"))
        perm = torch.randperm(self.n, generator=g)
        for i in range(self.start, self.num_batches):
            lo = i * self.batch_size + self.rank * self.per_rank
            yield perm[lo : lo + self.per_rank].tolist()

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)
