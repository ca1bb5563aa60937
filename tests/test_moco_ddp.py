"""MoCo v2 under DDP: two gloo processes with shuffle-BN give the same losses, parameters and queue as one
process with split-BN into two, over 5 trainer steps on the same global batches.

For the two runs to see the same random numbers, each image's views are drawn from a generator seeded by the
image's own content and the step (instead of one generator per rank, whose draws depend on how the batch is
split), and the only draw left on the trainer's generator is the key shuffle's permutation, which rank 0 draws
exactly as the single process does (same seed, same size ``W·B``).
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from gloo_ranks import run_on_gloo_ranks
from invarlab.methods import MethodConfig, build_method
from invarlab.train import Trainer
from invarlab.train.config import TrainConfig
from invarlab.views import make_views

STEPS = 5
MCFG = dict(
    name="moco",
    backbone="resnet18",
    stem="cifar",
    width=0.125,
    queue_size=24,
    queue_init="empty",
    view_size=16,
    proj_dim=8,
    temperature=0.2,
    momentum=0.9,  # far from 1 so the key encoder visibly moves in 5 steps
)


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, size: int = 20) -> None:
        g = torch.Generator().manual_seed(11)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i % 4, i


def _method(bn_splits: int):
    torch.manual_seed(0)
    method = build_method(MethodConfig(**MCFG, bn_splits=bn_splits), 4)
    calls = [0]

    def per_image_views(self, images, generator, n_views):
        calls[0] += 1
        out = []
        for img in images:  # real MoCo v2 views, one generator per (image, step)
            g = image_step_generator(img, calls[0])
            out.append(make_views(img[None], self.cfg.view_size, g, self.view_config, n_views)[0])
        return [torch.cat([o[v] for o in out]) for v in range(n_views)]

    method.make_views = types.MethodType(per_image_views, method)
    losses: list[float] = []
    step = method.training_step

    def recording_step(images, labels, generator):
        out = step(images, labels, generator)
        losses.append(float(out.loss.detach()))
        return out

    method.training_step = recording_step
    return method, losses


def image_step_generator(image: torch.Tensor, step: int) -> torch.Generator:
    """A generator seeded by an image's content and the step: the same draws however the batch is split."""
    return torch.Generator().manual_seed(int(image.long().sum()) * 1009 + step)


def assert_states_match(single: dict[str, torch.Tensor], rank: dict[str, torch.Tensor]) -> None:
    """One process's state dict equals a DDP rank's, running BN statistics aside: they are per rank under DDP
    (averaged over splits in one process)."""
    for k in single:
        if "running_" in k or "num_batches_tracked" in k:
            continue
        assert torch.allclose(single[k].float(), rank[k].float(), rtol=1e-4, atol=1e-5), k


def _config(run_dir: str) -> TrainConfig:
    cfg = TrainConfig(batch_size=8, steps=STEPS, amp="none", run_dir=run_dir, device="cpu", seed=5)
    cfg.checkpoint.every, cfg.checkpoint.keep = 0, 0
    cfg.log.every, cfg.log.tensorboard, cfg.log.progress = 1, False, False
    cfg.knn.every_epochs = 0
    cfg.optim.base_lr, cfg.optim.warmup_steps = 0.5, 0
    return cfg


def _train_rank(rank: int, run_dir: str, out: str) -> None:
    method, losses = _method(bn_splits=1)
    Trainer(_config(run_dir), method, Images()).fit()
    torch.save({"state": method.state_dict(), "losses": losses}, f"{out}.{rank}")


@pytest.mark.slow
def test_two_gloo_processes_with_shuffle_bn_equal_one_process_with_split_bn(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single, single_losses = _method(bn_splits=2)
    assert single.cfg.shuffle_bn
    Trainer(_config(str(tmp_path / "one")), single, Images()).fit()

    out = str(tmp_path / "ddp.pt")
    run_on_gloo_ranks(_train_rank, str(tmp_path / "two"), out)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]

    # Each rank's loss is the mean over its half of the batch, so their mean is the global batch's loss.
    ddp_losses = torch.tensor([r["losses"] for r in ranks]).mean(0)
    ref = torch.tensor(single_losses)
    assert len(ref) == STEPS and torch.allclose(ddp_losses, ref, rtol=1e-4), (ddp_losses, ref)
    assert (ref[1:] != ref[:-1]).all()  # the model and the queue really change from step to step

    a = single.state_dict()
    for rank in ranks:
        assert_states_match(a, rank["state"])
    # 40 keys through a queue of 24: it wrapped, and both runs hold the same keys in the same slots.
    assert int(a["queue.total"]) == STEPS * 8 and int(a["queue.count"]) == 24 and int(a["queue.ptr"]) == 16
