"""160 steps of MoCo v2 on a tiny rendered world: the loss falls once the queue holds real keys,
and kNN category accuracy of the held-out images is above chance."""

from __future__ import annotations

import json

import pytest
import torch

from invarlab.cli import load_train_config
from invarlab.train.api import train

CATEGORIES = "[mug,car,tree,lamp]"


@pytest.mark.slow
def test_moco_v2_on_a_tiny_world_lowers_its_loss_and_beats_chance(tmp_path):
    torch.set_num_threads(2)
    cfg = load_train_config(
        [
            "quickstart",
            f"run_dir={tmp_path / 'run'}",
            "data.world_preset=tiny",
            "data.world_dataset=object_centric",
            "data.world_monitor_dataset=",  # the tiny world has no eval_test; monitor on the held-out fraction
            f"data.world_overrides=[cache_dir={tmp_path / 'cache'},world.render.resolution=32,"
            f'datasets.object_centric.num_images=400,"datasets.object_centric.categories={CATEGORIES}"]',
            "data.held_out_fraction=0.2",
            "batch_size=32",
            "steps=160",  # at 80 the held-out kNN of the quick start's recipe swung 32-52 across seeds
            "method.width=0.125",
            "method.queue_size=128",
            "method.momentum=0.99",
            "method.view_overrides={blur_p: 0.0}",
            "optim.base_lr=0.5",
            "optim.warmup_steps=30",  # the quick start warms up for 300 of its 2,000 steps
            "checkpoint.every=0",
            "knn.every_epochs=100",
            "knn.k=20",
            "log.progress=false",
            "log.tensorboard=false",
            "channels_last=false",
        ],
        None,
    )
    result = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]  # means over 10 steps
    # Steps 11-20 (the queue of 128 holds only real keys from step 4 on) against the last 20 steps; measured
    # over seeds 0-2: 4.71-4.80 -> 4.16-4.38 (4.1 with the partly random queue of steps 1-10); kNN 41-64.
    early, late = losses[1], sum(losses[-2:]) / 2
    assert late < early - 0.1, losses
    chance = 100 / 4
    assert result.knn_top1 is not None and result.knn_top1 > chance + 10, result.knn_top1
