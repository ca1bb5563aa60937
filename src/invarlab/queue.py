"""Feature queues: FIFO banks of past keys used as negatives (MoCo) or neighbour candidates (P2's NN positives).

A queue is a module whose state lives in registered buffers (``queue``, ``labels``, ``ptr``, ``count``,
``total``), so ``state_dict()`` and checkpoints capture it and a resumed run continues with the same negatives.
Across ranks, gather keys first (:func:`invarlab.distributed.concat_all_gather`) so that every rank enqueues the
same global batch and the queues stay identical.

Order: keys are written to consecutive slots starting at ``ptr`` and wrapping from slot K − 1 to 0. The next
slot written is therefore always the one holding the oldest key: the oldest keys are overwritten first, and
after any sequence of enqueues the queue holds exactly the last ``min(total, K)`` keys, each once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invarlab.errors import ConfigError

__all__ = ["QUEUE_INITS", "FeatureQueue", "QueueSet"]

QUEUE_INITS = ("empty", "random")


class FeatureQueue(nn.Module):
    """A (K, D) FIFO of keys, with optional integer labels beside them (−1 = unknown).

    ``init="empty"``: the queue starts with no valid rows and :attr:`features` grows to K as keys arrive.
    ``init="random"``: all K rows start as random unit vectors and count as valid from the first step (the
    official MoCo code's initialisation; its random rows act as negatives until they are overwritten).
    """

    queue: Tensor
    labels: Tensor
    ptr: Tensor
    count: Tensor
    total: Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        with_labels: bool = False,
        init: str = "empty",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"a feature queue needs size >= 1 and dim >= 1 (got size={size}, dim={dim})")
        if init not in QUEUE_INITS:
            raise ConfigError(f"unknown queue init {init!r}: use one of {', '.join(QUEUE_INITS)}")
        self.size = int(size)
        self.dim = int(dim)
        self.with_labels = with_labels
        if init == "random":
            device = generator.device if generator is not None else None
            rows = torch.randn(size, dim, generator=generator, device=device)
            self.register_buffer("queue", F.normalize(rows, dim=1).to(dtype))
        else:
            self.register_buffer("queue", torch.zeros(size, dim, dtype=dtype))
        if with_labels:
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        # Scalar long tensors, not Python ints: they travel with state_dict and with .to(device), and the
        # pointer arithmetic in enqueue() then needs no host synchronisation.
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.tensor(size if init == "random" else 0, dtype=torch.long))
        self.register_buffer("total", torch.zeros((), dtype=torch.long))  # keys ever enqueued

    @property
    def num_valid(self) -> int:
        """Rows that hold a key (or a random initial row): ``min(total, K)``, or K with ``init="random"``."""
        return int(self.count)

    @property
    def is_full(self) -> bool:
        return self.num_valid == self.size

    @property
    def features(self) -> Tensor:
        """The valid rows ``(num_valid, D)`` in slot order (a view, no copy).

        Clone it before :meth:`enqueue` if a loss still needs it for ``backward``: enqueue writes in place, and
        autograd refuses tensors changed after they were saved (MoCo clones, as the official code does).
        """
        n = self.num_valid
        return self.queue if n == self.size else self.queue[:n]

    @property
    def feature_labels(self) -> Tensor:
        """The labels ``(num_valid,)`` beside :attr:`features` (−1 where unknown)."""
        if not self.with_labels:
            raise ValueError("this queue stores no labels: build it with with_labels=True")
        n = self.num_valid
        return self.labels if n == self.size else self.labels[:n]

    def chronological(self) -> Tensor:
        """The valid rows from oldest to newest (a copy once the queue has wrapped)."""
        if not self.is_full:
            return self.features
        p = int(self.ptr)
        return torch.cat([self.queue[p:], self.queue[:p]])

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Write ``keys`` ``(n, D)`` (and ``labels`` ``(n,)``) at slots ``ptr, ptr + 1, ... (mod K)``.

        Keys are stored detached, in the queue's dtype. If ``n > K`` only the last K keys are kept (those a
        sequence of smaller enqueues would have left).
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (n, {self.dim}), got {tuple(keys.shape)}")
        if labels is not None and labels.shape != keys.shape[:1]:
            raise ValueError(f"labels must be ({keys.shape[0]},), got {tuple(labels.shape)}")
        n_in = keys.shape[0]
        if n_in == 0:
            return
        keys = keys[-self.size :]
        n = keys.shape[0]
        # The skipped keys still advance the pointer, so slots stay in the order of arrival.
        start = self.ptr + (n_in - n)
        idx = (start + torch.arange(n, device=self.queue.device)) % self.size
        self.queue[idx] = keys.detach().to(self.queue.dtype)
        if self.with_labels:
            fill = labels[-self.size :].to(torch.long) if labels is not None else torch.full_like(idx, -1)
            self.labels[idx] = fill.to(self.labels.device)
        self.ptr.copy_((self.ptr + n_in) % self.size)
        self.count.copy_(torch.clamp(self.count + n_in, max=self.size))
        self.total.add_(n_in)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, with_labels={self.with_labels}"


class QueueSet(nn.ModuleDict):
    """Several named queues of the same length filled together, so row i of every queue belongs to the same
    key (P2's NN positives: neighbours found in a backbone-feature queue, the loss taken in the head-space
    queue at the same indices). ``qs["head"].features``; ``qs.enqueue({"head": k, "backbone": h}, labels)``.
    """

    def __init__(
        self,
        size: int,
        dims: Mapping[str, int],
        *,
        with_labels: bool = False,
        init: str = "empty",
        generator: torch.Generator | None = None,
    ) -> None:
        if not dims:
            raise ConfigError("a queue set needs at least one named queue")
        super().__init__(
            {
                name: FeatureQueue(size, dim, with_labels=with_labels, init=init, generator=generator)
                for name, dim in dims.items()
            }
        )

    @torch.no_grad()
    def enqueue(self, keys: Mapping[str, Tensor], labels: Tensor | None = None) -> None:
        """Enqueue one batch into every queue; ``keys`` must name every queue, each with the same batch size."""
        if set(keys) != set(self.keys()):
            raise ValueError(f"enqueue needs keys for exactly {sorted(self.keys())}, got {sorted(keys)}")
        sizes = {name: t.shape[0] for name, t in keys.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every queue must receive the same number of keys, got {sizes}")
        for name, queue in self.items():
            queue.enqueue(keys[name], labels)
