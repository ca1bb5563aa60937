"""Run a function on ranks of a real two-process gloo group (the DDP tests of the trainer and the methods).

``run_on_gloo_ranks(fn, *args)`` spawns ``world`` processes on a free local port; each joins the group, works on
one thread, calls ``fn(rank, *args)`` and leaves the group, even when ``fn`` raises (the error reaches the test
through ``torch.multiprocessing.spawn``). ``fn`` must be a module-level function of a test module, so the
spawned processes can import it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch


def _entry(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_on_gloo_ranks(fn: Callable[..., None], *args: Any, world: int = 2) -> None:
    """``fn(rank, *args)`` on every rank of a fresh ``world``-process gloo group; returns when all are done."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_entry, args=(world, port, fn, args), nprocs=world, join=True)
