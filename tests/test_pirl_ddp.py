"""PIRL under DDP (two gloo processes): with ``pirl_bank_init=embed`` every rank starts from rank 0's bank, which
equals the bank one process builds from the same network; after training steps every rank still holds the
same bank, and the rows that moved are exactly the images served to either rank (each rank's update gathers
every rank's rows and embeddings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gloo_ranks import run_on_gloo_ranks
from invarlab.methods import build_method
from invarlab.train import EpochBatchSampler, Trainer
from test_moco_ddp import _config
from test_pirl import Shapes, _pirl_cfg

STEPS = 3  # of 4 per epoch: some rows are never served, so "moved" is not "all"
BATCH = 8


def _trainer(run_dir: str):
    torch.manual_seed(0)  # the same initial network in every process
    method = build_method(_pirl_cfg(pirl_bank_init="embed"))
    cfg = _config(run_dir)
    cfg.steps, cfg.batch_size = STEPS, BATCH
    return method, Trainer(cfg, method, Shapes(32))


def _train_rank(rank: int, run_dir: str, out: str) -> None:
    method, trainer = _trainer(run_dir)
    start = method.memory.bank.clone()
    trainer.fit()
    params = {k: v.detach().clone() for k, v in method.named_parameters()}
    torch.save({"start": start, "end": method.memory.bank.clone(), "params": params}, f"{out}.{rank}")


@pytest.mark.slow
def test_every_rank_holds_the_same_bank(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _, single = _trainer(str(tmp_path / "one"))  # the bank one process builds (its trainer is not run)
    single_start = single.method.memory.bank.clone()

    out = str(tmp_path / "ddp.pt")
    run_on_gloo_ranks(_train_rank, str(tmp_path / "two"), out)
    r0, r1 = (torch.load(f"{out}.{r}") for r in range(2))

    assert torch.equal(r0["start"], r1["start"])  # broadcast from rank 0
    torch.testing.assert_close(r0["start"], single_start, rtol=1e-4, atol=1e-5)
    assert torch.equal(r0["end"], r1["end"])
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    served = sorted(i for b in list(EpochBatchSampler(32, BATCH, seed=5, epoch=0))[:STEPS] for i in b)
    moved = torch.nonzero((r0["end"] != r0["start"]).any(dim=1)).flatten().tolist()
    assert len(served) == STEPS * BATCH and moved == served
