"""The standard linear protocol: the backbone stays frozen (weights and BatchNorm statistics bitwise equal),
the classifier follows hand-computed SGD steps (momentum, weight decay, step schedule), and the CLI writes
``linear_sgd_<dataset>`` results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invarlab.data.classification import ArrayImages
from invarlab.eval.classify_config import LinearSgdConfig
from invarlab.eval.features import Encoder, extract
from invarlab.eval.linear_sgd import epoch_lr, train_linear_sgd
from invarlab.nets import build_backbone, make_checkpoint
from test_data_classification import write_cifar10
from test_eval_classify import _cli


def _data(n: int = 6, size: int = 12, seed: int = 0) -> ArrayImages:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return ArrayImages(images, np.arange(n) % 3, ["a", "b", "c"], identity="t")


def test_epoch_lr_step_and_cosine():
    step = LinearSgdConfig(lr=30.0, epochs=100, milestones=[60, 80])
    assert [epoch_lr(step, e) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx([30, 30, 3, 3, 0.3, 0.3])
    cos = LinearSgdConfig(lr=2.0, epochs=4, schedule="cosine")
    assert [epoch_lr(cos, e) for e in range(4)] == pytest.approx([2.0, 1.0 + 2**-0.5, 1.0, 1.0 - 2**-0.5])


def test_two_epochs_follow_hand_computed_sgd_with_momentum_and_decay():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125).eval()
    data = _data()
    # Full-image crops (scale 1) and no flips make every training view the test image: the features are
    # those of a plain forward pass, so the steps can be computed by hand.
    cfg = LinearSgdConfig(
        epochs=2,
        batch_size=6,
        lr=0.5,
        momentum=0.9,
        weight_decay=0.01,
        milestones=[1],
        scale=[1.0, 1.0],
        hflip_p=0.0,
    )
    feats, labels = extract(Encoder(backbone, None, "k", "s"), data)
    fc = nn.Linear(feats.shape[1], 3)
    w, b = fc.weight.detach().clone().double(), fc.bias.detach().clone().double()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()  # the protocol must put it in eval mode itself, or BatchNorm statistics would move
    result = train_linear_sgd(backbone, data, data, 3, cfg, image_size=12, seed=1, classifier=fc)

    x, onehot = feats.double(), F.one_hot(labels, 3).double()
    vw = vb = None
    for lr in (0.5, 0.05):  # milestone at epoch 1: lr x 0.1
        g = (torch.softmax(x @ w.T + b, dim=1) - onehot) / len(x)
        gw, gb = g.T @ x + 0.01 * w, g.sum(0) + 0.01 * b
        vw, vb = (gw, gb) if vw is None else (0.9 * vw + gw, 0.9 * vb + gb)
        w, b = w - lr * vw, b - lr * vb
    torch.testing.assert_close(fc.weight.detach().double(), w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fc.bias.detach().double(), b, rtol=1e-4, atol=1e-6)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running statistics included
    pred = (x @ w.T + b).argmax(1)
    assert result["top1"] == pytest.approx(float((pred == labels).double().mean() * 100))
    assert result["final_lr"] == pytest.approx(0.05)


def test_cli_linear_sgd_on_cifar_fixture_writes_its_key(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        make_checkpoint(build_backbone("resnet18", stem="cifar", width=0.125)),
        run / "checkpoints" / "step_1.pt",
    )
    (run / "config.yaml").write_text("method:\n  view_size: 16\n")
    write_cifar10(tmp_path, n_per_batch=6)
    _cli(
        [
            "eval", "linear-sgd", str(run), "--dataset", "cifar10", "--root", str(tmp_path),
            "linear_sgd.epochs=2", "linear_sgd.batch_size=16", "linear_sgd.lr=1.0", "device=cpu",
        ]
    )  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert set(results["linear_sgd_cifar10"]) == {"model", "random"}
    assert results["_meta"]["linear_sgd_cifar10"]["epochs"] == 2
    assert 0 <= results["linear_sgd_cifar10"]["model"]["top1"] <= 100
