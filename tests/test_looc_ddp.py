"""LooC under DDP: two gloo processes with shuffle-BN give the same per-space losses, parameters and per-space
queues as one process with split-BN into two, over 5 trainer steps on the same global batches.

As in test_moco_ddp (whose images and trainer config this reuses): each image's views ``q, k_0..k_n`` come from
a generator seeded by the image's content and the step, so both runs see the same views however the batch is
split, and the trainer's generator only draws the key shuffles (one per key view), which rank 0 draws as the
single process does.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from gloo_ranks import run_on_gloo_ranks
from invarlab.methods import MethodConfig, build_method
from invarlab.train import Trainer
from invarlab.views.looc import LoocViews, looc_views
from test_moco_ddp import STEPS, Images, _config, assert_states_match, image_step_generator

MCFG = dict(
    name="looc",
    looc_augs=["colour", "rotation"],
    backbone="resnet18",
    stem="cifar",
    width=0.125,
    queue_size=24,
    queue_init="empty",
    view_size=16,
    proj_dim=8,
    temperature=0.2,
    momentum=0.9,  # far from 1 so the key encoder visibly moves in 5 steps
    view_overrides={"blur_p": 0.0},
)


def _method(bn_splits: int):
    torch.manual_seed(0)
    method = build_method(MethodConfig(**MCFG, bn_splits=bn_splits), 4)
    calls = [0]

    def per_image_views(self, images, generator):
        calls[0] += 1
        out = []
        for img in images:  # real LooC views, one generator per (image, step)
            g = image_step_generator(img, calls[0])
            out.append(looc_views(img[None], self.cfg.view_size, g, self.view_spec))
        views = [torch.cat([o.views[v] for o in out]) for v in range(len(out[0].views))]
        return LoocViews(views, out[0].params, out[0].augs)  # training reads only the views

    method.make_looc_views = types.MethodType(per_image_views, method)
    records: list[dict[str, float]] = []
    step = method.training_step

    def recording_step(images, labels, generator):
        out = step(images, labels, generator)
        records.append({k: v for k, v in out.metrics.items() if k.startswith("loss")})
        return out

    method.training_step = recording_step
    return method, records


def _train_rank(rank: int, run_dir: str, out: str) -> None:
    method, records = _method(bn_splits=1)
    Trainer(_config(run_dir), method, Images()).fit()
    torch.save({"state": method.state_dict(), "records": records}, f"{out}.{rank}")


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_split_bn(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single, single_records = _method(bn_splits=2)
    assert single.cfg.shuffle_bn and single.num_spaces == 3
    Trainer(_config(str(tmp_path / "one")), single, Images()).fit()

    out = str(tmp_path / "ddp.pt")
    run_on_gloo_ranks(_train_rank, str(tmp_path / "two"), out)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]

    # Every space's loss is a mean over the rank's half of the batch: the ranks' mean is the global batch's.
    names = sorted(single_records[0])
    assert names == ["loss", "loss_colour", "loss_invariant", "loss_rotation"]
    ref = torch.tensor([[r[k] for k in names] for r in single_records])
    ddp = torch.tensor([[[r[k] for k in names] for r in rank["records"]] for rank in ranks]).mean(0)
    assert ref.shape == (STEPS, 4) and torch.allclose(ddp, ref, rtol=1e-4), (ddp, ref)
    assert (ref[1:] != ref[:-1]).all()  # model and queues change from step to step

    a = single.state_dict()
    for rank in ranks:
        assert_states_match(a, rank["state"])
    # 40 k_0 keys per space through queues of 24: each wrapped, and each holds its own space's keys
    for i in range(3):
        assert int(a[f"queues.{i}.total"]) == STEPS * 8 and int(a[f"queues.{i}.ptr"]) == 16
    assert not torch.allclose(a["queues.0.queue"], a["queues.1.queue"])
