"""The trainer and data sources: schedule, LARS, atomic checkpoints, exact resume, NaN stop, logs, folder and
world sources, ``invarlab export``, and (slow) two gloo processes equal one process.

The method here is a tiny supervised classifier written against the ``Method`` contract, so these tests do not
depend on ``invarlab.methods``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gloo_ranks import run_on_gloo_ranks
from invarlab.cli import main
from invarlab.data import FolderDataset, WorldDataset, collate_uint8, split_indices
from invarlab.errors import CheckpointError, ConfigError, DataError
from invarlab.nets import build_backbone
from invarlab.train import (
    LARS,
    EpochBatchSampler,
    NonFiniteLossError,
    Trainer,
    WarmupCosine,
    atomic_save,
    find_latest,
    lars_trust_ratio,
    load_training_checkpoint,
    scaled_lr,
)
from invarlab.train import checkpoint as ck
from invarlab.train.config import TrainConfig
from invarlab.train.log import read_metrics
from invarlab.views.ops import normalize, to_float


# ------------------------------------------------------------------------------------------ test fixtures
@dataclasses.dataclass
class StepOutput:
    loss: Tensor
    metrics: dict[str, float]


class TinySupervised(nn.Module):
    """A genuine method under the contract: random flips from the step's generator, dropout from torch's
    global RNG (so resume must restore both), cross-entropy on a linear classifier."""

    name = "tiny"

    def __init__(self, num_classes: int, width: float = 0.125, norm: bool = True) -> None:
        super().__init__()
        if norm:
            self.backbone = build_backbone("resnet18", stem="cifar", width=width)
        else:  # no BatchNorm: per-rank batch statistics would make DDP differ from one process
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
        dim = self.backbone.feature_dim if norm else 8
        self.drop = nn.Dropout(0.2 if norm else 0.0)
        self.fc = nn.Linear(dim, num_classes)
        self.random_views = norm

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        x = normalize(to_float(images))
        if self.random_views:
            flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        logits = self.fc(self.drop(self.backbone(x)))
        loss = F.cross_entropy(logits.float(), labels)
        return StepOutput(loss, {"acc": float((logits.argmax(1) == labels).float().mean())})

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for p in self.parameters() if p.ndim > 1]
        other = [p for p in self.parameters() if p.ndim <= 1]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        pass

    @torch.no_grad()
    def features(self, images_float_normalised: Tensor) -> Tensor:
        return self.backbone(images_float_normalised)


class Blobs(torch.utils.data.Dataset):
    """``n`` uint8 16x16 images whose mean colour depends on the class (learnable in a few steps)."""

    def __init__(self, n: int = 40, num_classes: int = 4, seed: int = 0, size: int = 16) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_classes
        base = (self.labels[:, None, None, None].float() * 60 + 20).expand(n, 3, size, size)
        self.images = (
            (base + torch.randint(0, 40, (n, 3, size, size), generator=g)).clamp(0, 255).to(torch.uint8)
        )
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self.images[i], int(self.labels[i]), i


def make_config(run_dir: Path, **kw) -> TrainConfig:
    base = dict(batch_size=8, steps=6, amp="auto", run_dir=str(run_dir), device="cpu", seed=3)
    base.update(kw)
    cfg = TrainConfig(**{k: v for k, v in base.items() if "." not in k})
    cfg.checkpoint.every, cfg.checkpoint.keep = 2, 0
    cfg.log.every, cfg.log.tensorboard, cfg.log.progress = 1, False, False
    cfg.knn.k, cfg.optim.base_lr, cfg.optim.warmup_steps = 5, 2.0, 2
    return cfg


def fresh_method(seed: int = 0, **kw) -> TinySupervised:
    torch.manual_seed(seed)
    return TinySupervised(4, **kw)


# -------------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_equals_formula():
    peak, T, W, ratio = 0.4, 50, 7, 0.1
    sched = WarmupCosine(peak, T, W, ratio)
    lo = ratio * peak
    for t in range(T):
        want = (
            peak * (t + 1) / W
            if t < W
            else lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
        )
        assert sched(t) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert sched(W - 1) == pytest.approx(peak) and sched(W) == pytest.approx(peak)
    assert WarmupCosine(peak, T, W, cosine=False)(T - 1) == peak
    assert scaled_lr(0.03, 512) == pytest.approx(0.06)
    groups = [{"lr": 0.0}, {"lr": 0.0, "lr_scale": 10.0}]
    lr = sched.apply(groups, 3)
    assert groups[0]["lr"] == lr and groups[1]["lr"] == pytest.approx(10 * lr)


# ------------------------------------------------------------------------------------------------ LARS
def test_lars_trust_ratio_hand_example():
    w, g = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])  # ||w|| = 5
    wd, eta, lr = 0.5, 0.01, 0.1
    d = g + wd * w  # [1.5, 4.0]
    assert lars_trust_ratio(w, d, eta).item() == pytest.approx(eta * 5 / math.hypot(1.5, 4.0))
    assert lars_trust_ratio(torch.zeros(2), d, eta).item() == 1.0  # zero weights: no adaptation
    W = nn.Parameter(w.clone().reshape(1, 2))  # 2-D: adapted
    b = nn.Parameter(torch.tensor([1.0, -1.0]))  # 1-D: excluded (r = 1)
    opt = LARS([W, b], lr=lr, weight_decay=wd, momentum=0.9, eta=eta)
    W.grad, b.grad = g.reshape(1, 2).clone(), torch.tensor([0.5, 0.5])
    opt.step()
    r = eta * 5 / math.hypot(1.5, 4.0)
    assert torch.allclose(W.detach(), (w - lr * r * d).reshape(1, 2))
    assert torch.allclose(
        b.detach(),
        torch.tensor([1.0, -1.0]) - lr * (torch.tensor([0.5, 0.5]) + wd * torch.tensor([1.0, -1.0])),
    )
    W.grad = g.reshape(1, 2).clone()  # second step: v = m v + r' d'
    v1 = r * d
    w1 = W.detach().clone().reshape(2)
    d2 = g + wd * w1
    opt.step()
    expect = w1 - lr * (0.9 * v1 + lars_trust_ratio(w1, d2, eta) * d2)
    assert torch.allclose(W.detach().reshape(2), expect)


# ----------------------------------------------------------------------------------------- checkpoints
def test_grad_clip_scales_the_step_to_the_limit(tmp_path):
    """Oracle: the gradient of the whole-batch loss computed here by hand, clipped to the limit by its norm;
    one plain SGD step (no momentum, decay or warm-up) must move the parameters by exactly lr * that."""
    data = Blobs(40)
    cfg = make_config(tmp_path, batch_size=40, steps=1, amp="none")
    cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.warmup_steps = 0.0, 0.0, 0
    cfg.optim.schedule, cfg.optim.grad_clip, cfg.knn.every_epochs = "constant", 1e-3, 0
    method = fresh_method(norm=False)
    start = [p.detach().clone() for p in method.parameters()]
    reference = fresh_method(norm=False)
    reference.training_step(data.images, data.labels, torch.Generator()).loss.backward()
    grads = [p.grad for p in reference.parameters()]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    assert norm > 1e-2  # so the limit below really clips
    trainer = Trainer(cfg, method, data)
    trainer.fit()
    for p0, p1, g in zip(start, method.parameters(), grads, strict=True):
        expected = p0 - trainer.peak_lr * g * (1e-3 / norm)
        assert torch.allclose(p1.detach(), expected.float(), atol=1e-7)
    logged = [r["train/grad_norm"] for r in read_metrics(tmp_path) if "train/grad_norm" in r]
    assert logged == [pytest.approx(float(norm), rel=1e-4)]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    first = atomic_save({"step": 1, "w": torch.arange(4.0)}, ck.checkpoint_path(tmp_path, 1))
    real_save = torch.save

    def crash(obj, f, *a, **k):  # write half a checkpoint, then die
        real_save(obj, f)
        f.seek(f.tell() // 2)
        f.truncate()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2, "w": torch.zeros(1000)}, ck.checkpoint_path(tmp_path, 2))
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name]  # no temp file left
    assert find_latest(tmp_path) == first
    assert torch.equal(torch.load(first)["w"], torch.arange(4.0))
    # A torn file under a final name (a broken disk, not our writer) reads as corrupt, naming the file.
    torn = ck.checkpoint_path(tmp_path, 3)
    torn.write_bytes(first.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"step_00000003\.pt"):
        load_training_checkpoint(torn)
    # A write killed by SIGKILL leaves a hidden temp file: never listed, removed at the next start.
    (tmp_path / "checkpoints" / ".step_00000004.pt.tmp-1-ab").write_bytes(b"x")
    assert find_latest(tmp_path) == torn
    assert [p.name for p in ck.remove_stale_temporaries(tmp_path)] == [".step_00000004.pt.tmp-1-ab"]


class Killed(Exception):
    pass


def test_kill_and_resume_is_bit_identical(tmp_path):
    data, held = Blobs(40), Blobs(12, seed=1)  # 5 steps per epoch: the kill and the resume straddle an epoch
    full = Trainer(make_config(tmp_path / "a"), fresh_method(), data, held)
    res = full.fit()
    assert res.step == 6 and res.checkpoint == ck.checkpoint_path(tmp_path / "a", 6)

    victim = fresh_method()
    step_fn = victim.training_step
    calls = []

    def dies_at_step_5(images, labels, generator):
        calls.append(1)
        if len(calls) == 5:
            raise Killed
        return step_fn(images, labels, generator)

    victim.training_step = dies_at_step_5
    with pytest.raises(Killed):
        Trainer(make_config(tmp_path / "b"), victim, data, held).fit()
    assert find_latest(tmp_path / "b").name == "step_00000004.pt"

    resumed = Trainer(make_config(tmp_path / "b"), fresh_method(seed=99), data, held)  # other init: must load
    res_b = resumed.fit()
    assert res_b.step == 6
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    # The logs read as one run: steps 1..6 once each, the same losses, kNN at step 0 (knn.at_start; not again on
    # resume), after each epoch and at the end.
    rows_a, rows_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    train_b = [r for r in rows_b if "train/loss" in r]
    assert [r["step"] for r in train_b] == [1, 2, 3, 4, 5, 6]
    assert [r["train/loss"] for r in train_b] == [r["train/loss"] for r in rows_a if "train/loss" in r]
    assert [r["step"] for r in rows_b if "knn/top1" in r] == [0, 5, 6]
    assert [r["knn/top1"] for r in rows_b if "knn/top1" in r] == [
        r["knn/top1"] for r in rows_a if "knn/top1" in r
    ]
    cfg_text = (tmp_path / "b" / "config.yaml").read_text()
    assert "batch_size: 8" in cfg_text and f"run_dir: {tmp_path / 'b'}" in cfg_text
    ckpt = load_training_checkpoint(res_b.checkpoint)  # invarlab layout: the backbone under torchvision names
    assert ckpt["format"] == "invarlab" and "layer4.1.conv2.weight" in ckpt["backbone"] and ckpt["step"] == 6


def _trained(run_dir: Path, at_start: bool) -> Trainer:
    cfg = make_config(run_dir)
    cfg.knn.at_start = at_start
    trainer = Trainer(cfg, fresh_method(), Blobs(40), Blobs(12, seed=1))
    trainer.fit()
    return trainer


def test_monitor_at_start_logs_step_0_and_does_not_change_training(tmp_path):
    """knn.at_start adds a step-0 record (the network at initialisation) and nothing else: the parameters, the
    optimiser state and every random state saved in the last checkpoint equal those of a run without it. The
    method's dropout draws from torch's global generator, which the monitor's DataLoaders also draw from."""
    probe = Trainer(make_config(tmp_path / "probe"), fresh_method(), Blobs(40), Blobs(12, seed=1))
    before = torch.get_rng_state()
    probe.run_monitor()
    assert not torch.equal(before, torch.get_rng_state())  # the monitor does draw: the restore is needed

    on, off = _trained(tmp_path / "on", True), _trained(tmp_path / "off", False)
    a, b = on.method.state_dict(), off.method.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = on.optimizer.state_dict()["state"], off.optimizer.state_dict()["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    rng_on = load_training_checkpoint(find_latest(tmp_path / "on"))["rng"][0]
    rng_off = load_training_checkpoint(find_latest(tmp_path / "off"))["rng"][0]
    assert torch.equal(rng_on["torch"], rng_off["torch"])
    assert torch.equal(rng_on["generator"], rng_off["generator"])

    rows_on, rows_off = read_metrics(tmp_path / "on"), read_metrics(tmp_path / "off")
    knn_on = [r for r in rows_on if "knn/top1" in r]
    assert [r["step"] for r in knn_on] == [0, 5, 6] and knn_on[0]["epoch"] == 0
    assert all(r["knn/chance"] == 25.0 for r in knn_on)  # 4 classes
    assert [r["step"] for r in rows_off if "knn/top1" in r] == [5, 6]
    assert [r["train/loss"] for r in rows_on if "train/loss" in r] == [
        r["train/loss"] for r in rows_off if "train/loss" in r
    ]
    assert [r["knn/top1"] for r in knn_on[1:]] == [r["knn/top1"] for r in rows_off if "knn/top1" in r]


def test_restart_before_the_first_checkpoint_logs_step_0_once(tmp_path):
    """A run that dies before any checkpoint starts afresh on resume=auto: its step-0 record is written again,
    and the old one is dropped with the rest of that attempt's lines."""
    victim = fresh_method()
    step_fn = victim.training_step

    def dies(images, labels, generator):
        raise Killed

    victim.training_step = dies
    with pytest.raises(Killed):
        Trainer(make_config(tmp_path), victim, Blobs(40), Blobs(12, seed=1)).fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0] and find_latest(tmp_path) is None
    victim.training_step = step_fn
    Trainer(make_config(tmp_path, steps=2), fresh_method(), Blobs(40), Blobs(12, seed=1)).fit()
    assert [r["step"] for r in read_metrics(tmp_path) if "knn/top1" in r] == [0, 2]


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    method = fresh_method()
    step_fn, calls = method.training_step, []

    def nan_at_step_3(images, labels, generator):
        calls.append(1)
        out = step_fn(images, labels, generator)
        return StepOutput(out.loss * float("nan"), out.metrics) if len(calls) == 3 else out

    method.training_step = nan_at_step_3
    trainer = Trainer(make_config(tmp_path, amp="bf16"), method, Blobs(40))  # autocast: bf16 on any CPU
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*step_00000002\.pt"):
        trainer.fit()
    assert find_latest(tmp_path).name == "step_00000002.pt"
    assert load_training_checkpoint(find_latest(tmp_path))["step"] == 2
    assert all(torch.isfinite(p).all() for p in method.parameters())  # stopped before the update


def test_config_checks_and_resume_none(tmp_path):
    with pytest.raises(ConfigError, match="set steps or epochs"):
        Trainer(make_config(tmp_path, steps=0), fresh_method(), Blobs(40))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        Trainer(make_config(tmp_path, amp="fp16"), fresh_method(), Blobs(40))
    with pytest.raises(DataError, match="fewer than one batch"):
        Trainer(make_config(tmp_path), fresh_method(), Blobs(4))
    Trainer(make_config(tmp_path, steps=2, amp="none"), fresh_method(), Blobs(40)).fit()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        Trainer(make_config(tmp_path, steps=2, resume="none"), fresh_method(), Blobs(40)).fit()
    t = Trainer(make_config(tmp_path, epochs=2, steps=0), fresh_method(), Blobs(40))
    assert t.total_steps == 10  # epochs * (40 // 8)


def test_epoch_sampler_shards_and_restarts():
    full = list(EpochBatchSampler(20, 4, seed=1, epoch=3))
    assert sorted(i for b in full for i in b) == sorted(set(i for b in full for i in b)) and len(full) == 5
    ranks = [list(EpochBatchSampler(20, 4, 1, 3, rank=r, world_size=2)) for r in range(2)]
    assert [ranks[0][i] + ranks[1][i] for i in range(5)] == full  # ranks' parts make the global batch
    assert list(EpochBatchSampler(20, 4, 1, 3, start=2)) == full[2:]
    assert list(EpochBatchSampler(20, 4, 1, 4)) != full  # a new order each epoch


# ------------------------------------------------------------------------------------------ data sources
def test_folder_source_skips_corrupt_files(tmp_path, caplog):
    root = tmp_path / "train"
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 3), ("dog", 2)):
        (root / cls / "sub").mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (20 + 7 * i, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 25), dtype=np.uint8), "L").save(
            root / cls / "sub" / "g.jpg"
        )
    (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level("WARNING"):
        ds = FolderDataset(root, image_size=16)
    assert "skipped 1 unreadable" in caplog.text and len(ds.skipped) == 1
    assert ds.classes == ["cat", "dog"] and len(ds) == 7 and ds.labels.tolist() == [0] * 4 + [1] * 3
    batch = collate_uint8([ds[i] for i in range(len(ds))])
    assert batch.images.shape == (7, 3, 16, 16) and batch.images.dtype == torch.uint8
    # centre crop of the shorter-side resize, against Pillow directly
    im = (
        Image.open(ds.paths[0])
        .convert("RGB")
        .resize((24, 16), Image.BILINEAR, reducing_gap=None)
        .crop((4, 0, 20, 16))
    )
    assert torch.equal(ds[0][0], torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    train, held = split_indices(len(ds), 0.3, seed=0)
    assert len(held) == 2 and sorted(train.tolist() + held.tolist()) == list(range(7))
    assert ds.subset(held).labels.tolist() == ds.labels[held].tolist()
    val = FolderDataset(
        root, 16, classes=["cat", "dog", "eel"]
    )  # a held-out folder takes the training classes
    assert val.num_classes == 3
    for bad, msg in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "no class sub-folders")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(DataError, match=msg) as info:
            FolderDataset(bad, 16)
        assert str(bad) in str(info.value)
    (tmp_path / "junk" / "a").mkdir(parents=True)
    (tmp_path / "junk" / "a" / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="none of its 1 image files can be read"):
        FolderDataset(tmp_path / "junk", 16)


def test_world_source_over_a_store_entry(tmp_path):
    from invarlab.world import store

    n = 10
    meta = {
        "category_0": np.array([5, 5, 2, 2, 9, 9, 2, 5, 9, -1]),
        "azimuth": np.linspace(0, 90, n).astype(np.float32),
    }
    batch = {
        "images": np.arange(n * 3 * 8 * 8, dtype=np.int64).reshape(n, 3, 8, 8).astype(np.uint8),
        "instance_mask": np.zeros((n, 8, 8), np.uint8),
        "category_mask": np.zeros((n, 8, 8), np.uint8),
        "boxes": np.zeros((n, 1, 4), np.float32),
        "visible_fraction": np.ones((n, 1), np.float32),
        "meta": meta,
    }
    rendered = store.write({"test": "train"}, n, [batch], cache_dir=tmp_path)
    ds = WorldDataset(rendered)
    assert ds.label_column == "category_0" and ds.classes == [2, 5, 9] and ds.num_classes == 3
    assert ds.labels.tolist() == [1, 1, 0, 0, 2, 2, 0, 1, 2, -1]
    image, label, index = ds[3]
    assert index == 3
    assert (
        image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(batch["images"][3])) and label == 0
    )
    sub = ds.subset([4, 2])
    assert len(sub) == 2 and sub[0][2] == 4 and sub.meta["azimuth"][1] == meta["azimuth"][2]
    held = WorldDataset(rendered.path, indices=[0, 2], classes=[5])
    assert held.labels.tolist() == [0, -1]
    with pytest.raises(DataError, match="'size' is not in"):
        WorldDataset(rendered, label="size")


# ------------------------------------------------------------------------------------------- CLI export
def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_export_loads_into_torchvision_strictly(tmp_path, capsys):
    from torchvision_compat import import_torchvision

    tv = import_torchvision()
    backbone = build_backbone("resnet18")  # torchvision-shaped: ImageNet stem, width 1
    ckpt = ck.checkpoint_path(tmp_path / "run", 7)
    from invarlab.nets import make_checkpoint

    atomic_save(make_checkpoint(backbone, None, method_state={}, optimizer={}, step=7, rng=[]), ckpt)
    code, out, err = run_main(capsys, "export", str(tmp_path / "run"), "--format", "torchvision")
    assert code == 0, err
    exported = tmp_path / "run" / "export" / "resnet18_torchvision_step_00000007.pt"
    assert str(exported) in out
    model = tv.models.resnet18()
    model.load_state_dict(torch.load(exported), strict=True)
    model.fc = nn.Identity()
    backbone.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model(x), backbone(x), atol=1e-5)

    narrow = ck.checkpoint_path(tmp_path / "narrow", 1)
    atomic_save(
        make_checkpoint(
            build_backbone("resnet18", stem="cifar", width=0.25),
            None,
            method_state={},
            optimizer={},
            step=1,
            rng=[],
        ),
        narrow,
    )
    code, _, err = run_main(capsys, "export", str(narrow), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "cannot export to torchvision" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "export", str(tmp_path / "nothing"))
    assert code == 2 and "no checkpoint" in err


def test_train_cli_reports_config_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 8\nsteps: 0\n")
    code, _, err = run_main(capsys, "train", "--config", str(cfg), f"run_dir={tmp_path / 'r'}", "device=cpu")
    assert code == 2 and "set steps or epochs" in err
    code, _, err = run_main(capsys, "train", "--config", str(cfg), "optim.nme=sgd")
    assert code == 2 and "optim.name" in err


# --------------------------------------------------------------------------------- distributed (2 x gloo)
def _ddp_rank(rank: int, run_dir: str, out: str) -> None:
    cfg = make_config(Path(run_dir), amp="none", steps=4)
    cfg.knn.every_epochs = 0
    trainer = Trainer(cfg, fresh_method(norm=False), Blobs(40))
    trainer.fit()
    if rank == 0:
        torch.save(trainer.method.state_dict(), out)


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    torch.set_num_threads(1)
    cfg = make_config(tmp_path / "one", amp="none", steps=4)
    cfg.knn.every_epochs = 0
    single = Trainer(cfg, fresh_method(norm=False), Blobs(40))
    single.fit()
    out = tmp_path / "ddp.pt"
    run_on_gloo_ranks(_ddp_rank, str(tmp_path / "two"), str(out))
    two = torch.load(out)
    for k, v in single.method.state_dict().items():
        assert torch.allclose(v, two[k], atol=1e-6), k
    assert json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_resume_is_bit_identical_with_moco(tmp_path):
    """The same with a real method (momentum encoder, queue, random views), when invarlab.methods is there."""
    methods = pytest.importorskip("invarlab.methods")
    mcfg = methods.MethodConfig(
        name="moco", backbone="resnet18", stem="cifar", width=0.125, queue_size=32, view_size=16, proj_dim=16
    )

    def build():
        torch.manual_seed(0)
        return methods.build_method(mcfg, 4)

    def config(run):
        cfg = make_config(tmp_path / run, steps=4, method=mcfg)
        cfg.knn.every_epochs = 0
        return cfg

    full = Trainer(config("a"), build(), Blobs(40))
    full.fit()
    victim = build()
    step_fn, calls = victim.training_step, []

    def dies_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return step_fn(*args)

    victim.training_step = dies_at_step_4
    with pytest.raises(Killed):
        Trainer(config("b"), victim, Blobs(40)).fit()
    resumed = Trainer(config("b"), build(), Blobs(40))
    resumed.fit()
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert "queue.features" in a or any("queue" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_world_monitor_labels_by_its_own_category_column(tmp_path, monkeypatch):
    """Cropped boxes label by ``crop_category``, object-centric images by ``category_0``: a monitor set of the
    other kind must still get category labels in the training set's class order."""
    from invarlab.train.api import build_datasets
    from invarlab.train.config import DataConfig

    monkeypatch.setenv("INVARLAB_CACHE", str(tmp_path))
    cfg = DataConfig(
        source="world",
        world_preset="tiny",
        world_dataset="cropped_boxes",
        world_monitor_dataset="object_centric",
        world_overrides=["datasets.cropped_boxes.min_box=4"],
    )
    train, monitor = build_datasets(cfg, seed=0)
    assert train.label_column == "crop_category" and monitor.label_column == "category_0"
    raw = np.asarray(monitor.rendered.meta["category_0"])
    expected = [train.classes.index(c) if c in train.classes else -1 for c in raw]
    assert monitor.labels.tolist() == expected


def test_world_source_applies_class_subset_and_max_images(tmp_path, monkeypatch):
    """data.classes (catalogue names) and data.max_images cut a world training source as they cut folders."""
    from invarlab.train.api import build_datasets
    from invarlab.train.config import DataConfig
    from invarlab.world.catalog import CATEGORY_NAMES

    monkeypatch.setenv("INVARLAB_CACHE", str(tmp_path))
    base = {"source": "world", "world_preset": "tiny", "world_dataset": "object_centric"}
    full, _ = build_datasets(DataConfig(**base, held_out_fraction=0), seed=0)
    raw = np.asarray(full.rendered.meta["category_0"])
    keep = sorted({int(c) for c in raw if c >= 0})[:2]
    names = [CATEGORY_NAMES[c] for c in keep]
    train, _ = build_datasets(DataConfig(**base, held_out_fraction=0, classes=names), seed=0)
    assert sorted(set(train.labels.tolist())) == [full.classes.index(c) for c in keep]
    assert len(train) == int(np.isin(raw, keep).sum())
    small, _ = build_datasets(DataConfig(**base, held_out_fraction=0, max_images=5), seed=0)
    assert len(small) == 5 and len(set(small.indices.tolist())) == 5
    again, _ = build_datasets(DataConfig(**base, held_out_fraction=0, max_images=5), seed=0)
    assert small.indices.tolist() == again.indices.tolist()
