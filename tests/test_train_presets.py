"""Every training preset loads and validates, and says what the papers' recipe says where it claims to."""

from __future__ import annotations

import pytest

from invarlab.cli import load_train_config
from invarlab.config import available_presets

PRESETS = available_presets("train")


def test_the_method_presets_exist():
    assert {"quickstart", "moco_v2", "simclr_cpu", "supervised_cpu"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_validates(name):
    cfg = load_train_config([name], None)
    assert cfg.method.name in {"moco", "simclr", "supervised"}
    assert cfg.batch_size > 0 and (cfg.steps > 0 or cfg.epochs > 0)


def test_moco_v2_preset_is_the_papers_recipe():
    cfg = load_train_config(["moco_v2"], None)  # PAPERS.md §2.2.1
    m = cfg.method
    assert (m.backbone, m.stem, m.width, m.view_size) == ("resnet50", "imagenet", 1.0, 224)
    assert (m.queue_size, m.momentum, m.temperature) == (65536, 0.999, 0.2)
    assert (cfg.batch_size, cfg.epochs, cfg.optim.base_lr, cfg.optim.weight_decay) == (256, 200, 0.03, 1e-4)
    assert cfg.optim.schedule == "cosine"


def test_train_quickstart_is_the_quick_starts_training():
    """`invarlab train` (preset quickstart) and `make demo` (configs/quickstart.yaml) train the same model."""
    from omegaconf import OmegaConf

    from invarlab.cli_eval import load_run_config

    alone, in_run = load_train_config(["quickstart"], None), load_run_config([], None).train
    assert OmegaConf.to_container(OmegaConf.structured(alone)) == OmegaConf.to_container(
        OmegaConf.structured(in_run)
    )


def test_the_folder_run_preset_trains_folder_cpu():
    """`invarlab run folder` trains what `invarlab train folder_cpu` trains (run_dir aside)."""
    from omegaconf import OmegaConf

    from invarlab.cli_eval import load_run_config

    alone = OmegaConf.to_container(OmegaConf.structured(load_train_config(["folder_cpu"], None)))
    in_run = OmegaConf.to_container(OmegaConf.structured(load_run_config(["folder"], None).train))
    assert in_run.pop("run_dir") == "runs/folder"
    alone.pop("run_dir")
    assert alone == in_run
