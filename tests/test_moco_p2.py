"""P2's MoCo options (PAPERS.md §2.2): multi-crop against one key, nearest-neighbour positives, warm-up, the
label-agreement metric, option errors, the real trainer (parameters move, resume is bit-identical) and the
configs/p2 presets.

Oracles: the NN loss and neighbours computed with Python loops; the multi-crop loss recomputed crop by crop in
eval mode (BatchNorm on running statistics, so concatenating crops cannot change a row); the queues captured
before the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from invarlab.config import load_config
from invarlab.errors import ConfigError
from invarlab.losses import multi_positive_info_nce, nn_neighbours, nn_pull
from invarlab.methods import MethodConfig, build_method, moco_loss
from invarlab.pipeline import RunConfig
from invarlab.train import Trainer
from invarlab.train.config import TrainConfig
from invarlab.views.multicrop import multicrop_views

TINY = {
    "backbone": "resnet18",
    "stem": "cifar",
    "width": 0.125,
    "view_size": 16,
    "proj_dim": 16,
    "queue_size": 32,
}
P2 = {"multicrop_n": 3, "multicrop_size": 8, "constrained": True, "autoaugment_p": 0.5}
PRESETS = Path(__file__).resolve().parents[1] / "configs" / "p2"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int, side: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _method(**kw):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_method(MethodConfig(**{**TINY, **kw}), 4)


# ------------------------------------------------------------------------------------------------ the loss
def test_nn_neighbours_and_nn_pull_equal_loops() -> None:
    g = torch.Generator().manual_seed(0)
    n, k_size, d, dbb, topk, tau = 6, 20, 8, 5, 4, 0.2
    q = F.normalize(torch.randn(n, d, generator=g), dim=1).double()
    queue = F.normalize(torch.randn(k_size, d, generator=g), dim=1).double()
    h = F.normalize(torch.randn(n, dbb, generator=g), dim=1)
    bank = F.normalize(torch.randn(k_size, dbb, generator=g), dim=1)
    nb = nn_neighbours(h, bank, topk)
    total = 0.0
    for i in range(n):
        sims = [sum(float(h[i, c]) * float(bank[m, c]) for c in range(dbb)) for m in range(k_size)]
        assert nb[i].tolist() == sorted(range(k_size), key=lambda m: -sims[m])[:topk]
        logits = [sum(float(q[i, c]) * float(queue[m, c]) for c in range(d)) / tau for m in range(k_size)]
        log_denominator = math.log(sum(math.exp(x) for x in logits))
        total += sum(logits[m] - log_denominator for m in nb[i].tolist()) / topk
    expected = -total / n
    assert nn_pull(q, queue, nb, tau).item() == pytest.approx(expected, rel=1e-9)
    # The same as SupCon's mean log-probability with the neighbours as positives.
    mask = torch.zeros(n, k_size, dtype=torch.bool).scatter_(1, nb, True)
    assert multi_positive_info_nce(q, queue, mask, tau).item() == pytest.approx(expected, rel=1e-9)
    # k is capped at the bank; k = 0 gives a zero that still has a graph.
    assert nn_neighbours(h, bank[:3], topk).shape == (n, 3)
    qg = q.clone().requires_grad_()
    zero = nn_pull(qg, queue, nn_neighbours(h, bank[:0], topk), tau)
    zero.backward()
    assert zero.item() == 0.0 and qg.grad is not None


# ---------------------------------------------------------------------------------------------- multi-crop
def test_multicrop_moco_one_forward_per_side_and_mean_of_crop_losses() -> None:
    method = _method(**P2)
    method.eval()  # BatchNorm on running statistics: a crop's rows do not depend on what they are batched with
    calls, key_calls = [], []
    method.backbone.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    method.backbone_momentum.register_forward_hook(
        lambda mod, inp, out: key_calls.append(tuple(inp[0].shape))
    )
    images, labels = _images(8), torch.arange(8) % 4
    negatives = method.queue.features.clone()
    out = method.training_step(images, labels, torch.Generator().manual_seed(3))
    assert calls == [(8, 3, 16, 16), (24, 3, 8, 8)] and key_calls == [(8, 3, 16, 16)]
    views = multicrop_views(images, method.multicrop, torch.Generator().manual_seed(3))
    with torch.no_grad():
        k = F.normalize(method.head_momentum(method.backbone_momentum(views.key)), dim=1)
        losses = [
            moco_loss(F.normalize(method.head(method.backbone(views.crops[i])), dim=1), k, negatives, 0.2)[0]
            for i in views.query_indices
        ]
    assert len(losses) == 4  # crop 0 and the three small crops; crop 1 is the key
    assert out.metrics["loss_moco"] == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.metrics["loss_moco"], rel=1e-6)  # no NN term
    # One key per image enqueued, with its label.
    assert int(method.queue.ptr) == 8 and torch.allclose(method.queue.queue[:8], k, atol=1e-6)
    assert method.queue.labels[:8].tolist() == labels.tolist()
    assert 0.0 <= out.metrics["crop_fallback"] <= 1.0


# -------------------------------------------------------------------------------------------- NN positives
def test_nn_loss_uses_both_queues_before_the_enqueue() -> None:
    method = _method(multicrop_n=2, multicrop_size=8, nn_topk=5)
    method.eval()
    images, labels = _images(8, seed=1), torch.arange(8) % 4
    bank, negatives = method.queue_backbone.features.clone(), method.queue.features.clone()
    out = method.training_step(images, labels, torch.Generator().manual_seed(4))
    views = multicrop_views(images, method.multicrop, torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = torch.cat([method.backbone(views.crops[i]) for i in views.query_indices])  # crop 0, then 2, 3
        q = F.normalize(method.head(h), dim=1).double()
        hn = F.normalize(h, dim=1).double()
    total = 0.0
    for i in range(q.shape[0]):
        order = sorted(range(32), key=lambda m, i=i: -float(hn[i] @ bank[m].double()))[:5]
        logits = [float(q[i] @ negatives[m].double()) / 0.2 for m in range(32)]
        log_denominator = math.log(sum(math.exp(x) for x in logits))
        total += sum(logits[m] - log_denominator for m in order) / 5
    expected = -total / q.shape[0]
    assert out.metrics["loss_nn"] == pytest.approx(expected, rel=1e-4)
    assert out.loss.item() == pytest.approx(out.metrics["loss_moco"] + 0.4 * expected, rel=1e-4)
    # Taken after the enqueue, the value would differ: the order is observable.
    after = nn_pull(
        q.float(), method.queue.features, nn_neighbours(hn.float(), method.queue_backbone.features, 5), 0.2
    )
    assert abs(after.item() - expected) > 1e-3
    # Both queues got this step's keys in the same slots: head keys and normalised backbone features.
    k, hk = method.encode_key(views.key, with_features=True)
    assert torch.allclose(method.queue.queue[:8], k, atol=1e-6)
    assert torch.allclose(method.queue_backbone.queue[:8], hk, atol=1e-6)


def test_nn_empty_queue_warmup_and_label_agreement() -> None:
    method = _method(nn_topk=3, queue_init="empty")  # NN without multi-crop: two crops, query = crop 0
    first = method.training_step(_images(8), torch.arange(8) % 4, torch.Generator().manual_seed(0))
    # Nothing to pull towards yet: no neighbours, no loss, no agreement.
    assert first.metrics["loss_nn"] == 0.0 and "nn_label_agree" not in first.metrics
    assert method.queue_backbone.num_valid == 8 == method.queue.num_valid
    # Label agreement: the fraction of neighbours whose stored label is the query's.
    method.queue.labels[:8] = 2
    same = method.training_step(_images(8, seed=1), torch.full((8,), 2), torch.Generator().manual_seed(1))
    assert same.metrics["nn_label_agree"] == 1.0
    other = method.training_step(_images(8, seed=2), torch.full((8,), 1), torch.Generator().manual_seed(2))
    assert other.metrics["nn_label_agree"] == 0.0  # every stored label is 2
    unlabelled = method.training_step(
        _images(8, seed=3), torch.full((8,), -1), torch.Generator().manual_seed(3)
    )
    assert "nn_label_agree" not in unlabelled.metrics
    # Warm-up: the first ceil(0.5 x 10) = 5 steps leave the NN term out of the loss (it is still logged).
    warm = _method(nn_topk=3, nn_warmup=0.5)
    for done, active in ((None, False), (0, False), (3, False), (4, True)):
        if done is not None:
            warm.on_after_optimizer_step(done, 10)
        out = warm.training_step(_images(8), torch.arange(8) % 4, torch.Generator().manual_seed(5))
        assert out.metrics["nn_active"] == float(active)
        expected = out.metrics["loss_moco"] + (0.4 * out.metrics["loss_nn"] if active else 0.0)
        assert out.loss.item() == pytest.approx(expected, rel=1e-5) and out.metrics["loss_nn"] > 0


def test_option_errors() -> None:
    with pytest.raises(ConfigError, match="symmetric"):
        _method(multicrop_n=2, symmetric=True)
    with pytest.raises(ConfigError, match="multicrop_n"):
        _method(constrained=True)
    with pytest.raises(ConfigError, match="multicrop_scale"):
        load_config(MethodConfig, overrides=["multicrop_scale=[0.3, 0.1]"])


# -------------------------------------------------------------------------------------------- the trainer
class Blobs(torch.utils.data.Dataset):
    """``n`` uint8 24x24 images whose mean colour depends on the class."""

    def __init__(self, n: int = 32, num_classes: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % num_classes
        base = (self.labels[:, None, None, None].float() * 60 + 20).expand(n, 3, 24, 24)
        self.images = (base + torch.randint(0, 40, (n, 3, 24, 24), generator=g)).clamp(0, 255).to(torch.uint8)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.images[i], int(self.labels[i]), i


class Killed(Exception):
    pass


def _train_config(run_dir: Path, mcfg: MethodConfig) -> TrainConfig:
    cfg = TrainConfig(
        batch_size=8, steps=4, amp="none", run_dir=str(run_dir), device="cpu", seed=3, method=mcfg
    )
    cfg.checkpoint.every, cfg.checkpoint.keep = 2, 0
    cfg.log.every, cfg.log.tensorboard, cfg.log.progress = 1, False, False
    cfg.knn.every_epochs = 0
    cfg.optim.base_lr, cfg.optim.warmup_steps = 0.5, 1
    return cfg


def test_trainer_moves_parameters_and_resumes_bit_identically(tmp_path: Path) -> None:
    mcfg = MethodConfig(**TINY, **P2, nn_topk=4, nn_warmup=0.3, momentum=0.9)

    def build():  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        return build_method(mcfg, 4)

    full = Trainer(_train_config(tmp_path / "a", mcfg), build(), Blobs())
    start = {k: v.clone() for k, v in full.method.state_dict().items()}
    result = full.fit()
    end = full.method.state_dict()
    assert result.step == 4 and not torch.equal(start["backbone.conv1.weight"], end["backbone.conv1.weight"])
    assert not torch.equal(start["queue_backbone.queue"], end["queue_backbone.queue"])
    assert end["nn_steps"].tolist() == [4, 4]
    assert {"loss_nn", "nn_label_agree", "loss_moco", "crop_fallback"} <= set(result.metrics)

    victim = build()
    step_fn, calls = victim.training_step, []

    def dies_at_step_3(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return step_fn(*args)

    victim.training_step = dies_at_step_3
    with pytest.raises(Killed):
        Trainer(_train_config(tmp_path / "b", mcfg), victim, Blobs()).fit()
    resumed = Trainer(_train_config(tmp_path / "b", mcfg), build(), Blobs())
    resumed.fit()
    other = resumed.method.state_dict()
    assert all(torch.equal(end[k], other[k]) for k in end)


# ------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", ["moco", "multicrop", "constrained", "autoaugment", "nn", "all"])
def test_p2_presets_load_and_step(name: str) -> None:
    cfg = load_config(RunConfig, PRESETS / f"{name}.yaml")
    m = cfg.train.method
    assert m.name == "moco" and cfg.train.data.source == "world"
    assert (m.multicrop_n > 0) == (name in ("multicrop", "constrained", "all"))
    assert m.constrained == (name in ("constrained", "all"))
    assert (m.autoaugment_p == 0.5) == (name in ("autoaugment", "all"))
    assert (m.nn_topk == 20) == (name in ("nn", "all"))
    small = MethodConfig(**{**m.__dict__, "queue_size": 64, "width": 0.125})
    torch.manual_seed(0)
    method = build_method(small, 4)
    out = method.training_step(_images(4, side=32), torch.arange(4), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
