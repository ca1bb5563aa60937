"""Feature extraction: every checkpoint layout gives the source network's own features, the random floor is
the same architecture re-initialised, and the cache returns what extraction computed."""

from __future__ import annotations

import pytest
import torch

from invarlab.errors import CheckpointError
from invarlab.eval import features as F_
from invarlab.eval.features import (
    cached_features,
    encoder_from_checkpoint,
    extract,
    head_from_state_dict,
    random_encoder,
)
from invarlab.nets import build_backbone, make_checkpoint
from invarlab.nets.heads import ProjectionHead
from invarlab.views.ops import normalize, to_float


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 10, size: int = 16) -> None:
        g = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3, i


def _net(seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125).eval()
    for m in backbone.modules():  # non-trivial running statistics, so eval-mode BN matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    head = ProjectionHead(backbone.feature_dim, 8).eval()
    return backbone, head


def _reference(backbone, head, ds):
    x = normalize(to_float(ds.images))
    with torch.no_grad():
        f = backbone.forward_features(x)
        return f, head(f)


@pytest.mark.parametrize("layout", ["invarlab_head", "training", "moco_official"])
def test_every_layout_gives_the_networks_own_features(tmp_path, layout):
    torch.set_num_threads(1)
    backbone, head = _net()
    path = tmp_path / "ckpt.pt"
    if layout == "invarlab_head":
        obj = make_checkpoint(backbone, head)
    elif layout == "training":  # what the trainer writes: head inside the method's state dict
        method_state = {f"head.{k}": v for k, v in head.state_dict().items()}
        obj = make_checkpoint(backbone, None, method_state=method_state, step=3)
    else:
        sd = {f"module.encoder_q.{k}": v for k, v in backbone.state_dict().items()}
        sd.update({f"module.encoder_q.fc.{k}": v for k, v in head.state_dict().items()})
        sd["module.queue"] = torch.randn(8, 4)
        obj = {"epoch": 1, "arch": "resnet18", "state_dict": sd}
    torch.save(obj, path)
    arch = {"name": "resnet18", "stem": "cifar", "width": 0.125} if layout == "moco_official" else None
    enc = encoder_from_checkpoint(path, arch)
    ds = Images()
    ref_f, ref_h = _reference(backbone, head, ds)
    feats, labels = extract(enc, ds, "pooled", batch_size=4)
    torch.testing.assert_close(feats, ref_f, atol=1e-5, rtol=0)
    assert labels.tolist() == [i % 3 for i in range(10)]
    heads, _ = extract(enc, ds, "head", batch_size=3)
    torch.testing.assert_close(heads, ref_h, atol=1e-5, rtol=0)


def test_run_folder_uses_its_newest_checkpoint_and_the_key_follows_the_bytes(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for step, seed in ((5, 0), (12, 1)):
        backbone, _ = _net(seed)
        torch.save(make_checkpoint(backbone), tmp_path / "checkpoints" / f"step_{step:08d}.pt")
    enc = encoder_from_checkpoint(tmp_path)
    assert enc.source.endswith("step_00000012.pt")
    newest, _ = _net(1)
    assert torch.equal(enc.backbone.conv1.weight, newest.conv1.weight)
    assert enc.key != encoder_from_checkpoint(tmp_path / "checkpoints" / "step_00000005.pt").key
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        encoder_from_checkpoint(tmp_path / "checkpoints" / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*invarlab train"):
        encoder_from_checkpoint(tmp_path / "empty")


def test_random_floor_is_the_same_architecture_reinitialised_deterministically(tmp_path):
    backbone, head = _net(seed=7)
    torch.save(make_checkpoint(backbone, head), tmp_path / "c.pt")
    enc = encoder_from_checkpoint(tmp_path / "c.pt")
    a, b, c = random_encoder(enc, 0), random_encoder(enc, 0), random_encoder(enc, 1)
    assert a.backbone.arch_config == enc.backbone.arch_config and a.key == b.key != c.key
    assert torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    assert not torch.equal(a.backbone.conv1.weight, c.backbone.conv1.weight)
    assert not torch.equal(a.backbone.conv1.weight, enc.backbone.conv1.weight)
    assert not torch.equal(a.head[0].weight, enc.head[0].weight)
    assert [type(m) for m in a.head] == [type(m) for m in enc.head]


def test_cache_returns_the_extracted_features_without_recomputing(tmp_path, monkeypatch):
    backbone, head = _net()
    torch.save(make_checkpoint(backbone, head), tmp_path / "c.pt")
    enc = encoder_from_checkpoint(tmp_path / "c.pt")
    ds = Images()
    first = cached_features(tmp_path, enc, ds, "imgs", "pooled", image_size=24)
    files = list((tmp_path / "features" / enc.key).iterdir())
    assert [f.name for f in files] == ["imgs-pooled-s24.pt"]

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(F_, "extract", boom)
    again = cached_features(tmp_path, enc, ds, "imgs", "pooled", image_size=24)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    with pytest.raises(AssertionError, match="recomputed"):  # another layer is another entry
        cached_features(tmp_path, enc, ds, "imgs", "layer3")


def test_dense_maps_and_dilation_keep_weights_and_double_resolution():
    backbone, head = _net()
    enc = F_.Encoder(backbone, head, "k", "mem")
    ds = Images(4, 32)
    plain, _ = extract(enc, ds, "layer3")
    dilated, _ = extract(enc, ds, "layer3", dilate=True)
    assert plain.shape == (4, backbone.channels["layer3"], 8, 8)  # CIFAR stem: layer3 at stride 4
    assert dilated.shape == (4, backbone.channels["layer3"], 16, 16)
    # Dilation only moves where the 3x3 taps land: the first conv of layer3 (the stride-2 one) sees the same
    # pixels, so the dilated map sampled every other pixel equals the plain map in that first stage.
    layer4, _ = extract(enc, ds, "layer4")
    assert layer4.shape[-1] == 4


def test_head_from_state_dict_rebuilds_bn_heads():
    h = ProjectionHead(16, 4, 8, num_layers=3, batch_norm=True, last_bn=True)
    rebuilt = head_from_state_dict(h.state_dict())
    assert [type(m) for m in rebuilt] == [type(m) for m in h]
    h.eval(), rebuilt.eval()
    x = torch.randn(5, 16)
    torch.testing.assert_close(rebuilt(x), h(x))


def test_streamed_extraction_in_workers_and_float16_equals_the_reference(tmp_path, caplog):
    backbone, head = _net()
    enc = F_.Encoder(backbone, head, "k", "s")
    ds = Images(n=45)
    ref, _ = _reference(backbone, head, ds)
    with caplog.at_level("INFO", logger="invarlab.eval.features"):
        feats, labels = extract(enc, ds, batch_size=2, num_workers=1)  # 23 batches: progress is logged
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-5)
    assert labels.tolist() == [i % 3 for i in range(45)]
    assert any("features: " in r.getMessage() and "/ 45 images" in r.getMessage() for r in caplog.records)
    half, _ = extract(enc, ds, batch_size=16, dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, rtol=2e-3, atol=2e-3)
    cached_features(tmp_path, enc, ds, "imgs", "pooled", dtype=torch.float16)
    assert [f.name for f in (tmp_path / "features" / "k").iterdir()] == ["imgs-pooled-fp16.pt"]
