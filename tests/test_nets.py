"""invarlab.nets against independent oracles: torchvision's ResNets, an official-layout MoCo checkpoint built
from torchvision modules, and the momentum formula evaluated by hand."""

from __future__ import annotations

import fractions
import math

import pytest
import torch
from torch import nn

from invarlab.errors import CheckpointError, ConfigError, UserError
from invarlab.nets import (
    build_backbone,
    build_head,
    cosine_momentum,
    describe_state_dict,
    detect_layout,
    export_torchvision_state_dict,
    linear_head,
    load_checkpoint,
    load_moco_checkpoint,
    load_torchvision_state_dict,
    make_checkpoint,
    moco_v2_head,
    momentum_copy,
    resnet18,
    simclr_head,
    update_momentum,
)
from invarlab.nets.backbones import Bottleneck
from torchvision_compat import import_torchvision

tv = import_torchvision()


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine and running stats, so eval-mode comparisons exercise every buffer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                n = m.num_features
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _x(seed: int = 1, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_names_and_shapes_equal_torchvision(name: str) -> None:
    ours = build_backbone(name, num_classes=1000).state_dict()
    theirs = getattr(tv.models, name)().state_dict()
    assert list(ours) == list(theirs)  # same names, same order
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert build_backbone(name).is_torchvision_shaped
    assert build_backbone(name).feature_dim == {"resnet18": 512, "resnet50": 2048}[name]


def test_module_names_equal_torchvision_resnet18() -> None:
    ours = {n for n, _ in resnet18().named_modules()}
    theirs = {n for n, _ in tv.models.resnet18().named_modules()}
    assert ours == theirs
    assert "layer2.0.downsample.0" in ours and "layer2.0.downsample.1" in ours


def test_torchvision_weights_load_strict_and_forward_equal() -> None:
    torch.manual_seed(0)
    ref = _randomise_bn(tv.models.resnet18()).eval()
    ours = resnet18().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    report = load_torchvision_state_dict(resnet18(), ref.state_dict())
    assert report.layout == "torchvision" and not report.missing_keys and not report.unexpected_keys


def test_export_into_torchvision_strict_equal_outputs() -> None:
    torch.manual_seed(1)
    ours = _randomise_bn(resnet18()).eval()
    ref = tv.models.resnet18().eval()
    ref.load_state_dict(export_torchvision_state_dict(ours), strict=True)
    x = _x(2)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), ours(x), atol=1e-5, rtol=0)


def test_headless_export_fills_zero_fc_and_features_match() -> None:
    torch.manual_seed(2)
    ours = _randomise_bn(build_backbone("resnet18")).eval()
    sd = export_torchvision_state_dict(ours)
    assert torch.equal(sd["fc.weight"], torch.zeros(1000, 512)) and torch.equal(
        sd["fc.bias"], torch.zeros(1000)
    )
    ref = tv.models.resnet18().eval()
    ref.load_state_dict(sd, strict=True)
    ref.fc = nn.Identity()
    x = _x(3)
    with torch.no_grad():
        feats = ours(x)
        assert feats.shape == (1, 512)
        torch.testing.assert_close(ref(x), feats, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.forward_features(x), feats)


@pytest.mark.parametrize(
    ("kwargs", "words"), [({"stem": "cifar"}, "stem='cifar'"), ({"width": 0.5}, "width=0.5")]
)
def test_non_torchvision_variants_refuse_export(kwargs: dict, words: str) -> None:
    model = build_backbone("resnet18", **kwargs)
    assert not model.is_torchvision_shaped
    with pytest.raises(ConfigError, match="cannot export to torchvision") as info:
        export_torchvision_state_dict(model)
    assert words in str(info.value) and "make_checkpoint" in str(info.value)


def test_cifar_stem_and_width() -> None:
    model = build_backbone("resnet18", stem="cifar", width=0.25)
    assert model.channels == {"layer1": 16, "layer2": 32, "layer3": 64, "layer4": 128}
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.output_stride == 8
    maps = model.feature_maps(torch.randn(2, 3, 32, 32), ("layer3", "layer4"))
    assert maps["layer3"].shape == (2, 64, 8, 8) and maps["layer4"].shape == (2, 128, 4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert build_backbone("resnet50", width=0.25).feature_dim == 512


def test_zero_init_residual_matches_torchvision() -> None:
    ours = build_backbone("resnet18", zero_init_residual=True)
    theirs = tv.models.resnet18(zero_init_residual=True).state_dict()
    zero_ours = {k for k, v in ours.state_dict().items() if k.endswith(".weight") and not v.any()}
    zero_theirs = {k for k, v in theirs.items() if k.endswith(".weight") and not v.any()}
    assert zero_ours == zero_theirs and len(zero_ours) == 8  # bn2 of each of the 8 BasicBlocks
    narrow50 = build_backbone("resnet50", width=0.25, zero_init_residual=True)
    blocks = [m for m in narrow50.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(not b.bn3.weight.any() and b.bn2.weight.all() for b in blocks)


def test_dilation_output_stride_and_equality_with_torchvision() -> None:
    # ResNet-50: torchvision supports dilation for Bottleneck, so it is an oracle for outputs too.
    torch.manual_seed(3)
    ref = _randomise_bn(tv.models.resnet50(replace_stride_with_dilation=[False, True, True])).eval()
    ref.fc = nn.Identity()
    ours = build_backbone("resnet50", replace_stride_with_dilation=(False, True, True)).eval()
    load_torchvision_state_dict(ours, ref.state_dict())
    x = _x(4)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
        assert ours.output_stride == 8
        assert ours.feature_maps(x)["layer4"].shape == (1, 2048, 8, 8)
    # ResNet-18 (torchvision refuses dilation in BasicBlock): shapes, names and stride only.
    r18 = build_backbone("resnet18", replace_stride_with_dilation=(False, False, True))
    assert r18.is_torchvision_shaped and r18.output_stride == 16
    assert r18.feature_maps(x, ("layer4",))["layer4"].shape == (1, 512, 4, 4)
    assert r18.layer4[1].conv1.dilation == (2, 2) and r18.layer4[0].conv1.dilation == (1, 1)


def _moco_official(tmp_path, mlp: bool = True):
    """A checkpoint in main_moco.py's layout, built from torchvision modules as moco/builder.py builds them."""
    torch.manual_seed(4)
    enc_q = _randomise_bn(tv.models.resnet18(num_classes=128))
    if mlp:
        enc_q.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), enc_q.fc)
    enc_k = _randomise_bn(tv.models.resnet18(num_classes=128), seed=9)
    sd = {f"encoder_q.{k}": v for k, v in enc_q.state_dict().items()}
    sd.update({f"encoder_k.{k}": v for k, v in enc_k.state_dict().items()})
    sd["queue"] = nn.functional.normalize(torch.randn(128, 256), dim=0)
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    ckpt = {
        "epoch": 200,
        "arch": "resnet18",
        "state_dict": {f"module.{k}": v for k, v in sd.items()},  # saved from DDP
        "optimizer": torch.optim.SGD(enc_q.parameters(), lr=0.03, momentum=0.9).state_dict(),
    }
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save(ckpt, path)
    return path, enc_q.eval()


def test_moco_official_checkpoint_loads_with_head(tmp_path) -> None:
    path, enc_q = _moco_official(tmp_path)
    model, head = build_backbone("resnet18").eval(), moco_v2_head(512)
    report = load_checkpoint(path, model, head)
    assert report.layout == "moco" and str(path) in str(report)
    assert any(k.startswith("module.encoder_k.") for k in report.ignored_keys)
    assert {"module.queue", "module.queue_ptr"} <= set(report.ignored_keys)
    assert sorted(report.head_loaded_keys) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    x = _x(5)
    head_q, enc_q.fc = enc_q.fc, nn.Identity()
    with torch.no_grad():
        feats = model(x)
        torch.testing.assert_close(feats, enc_q(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(head(feats), head_q(feats), atol=1e-6, rtol=0)


def test_moco_checkpoint_without_head_and_v1_linear_head(tmp_path) -> None:
    path, _ = _moco_official(tmp_path, mlp=False)
    report = load_moco_checkpoint(path, build_backbone("resnet18"))
    assert "module.encoder_q.fc.weight" in report.ignored_keys
    head = linear_head(512, 128)
    load_moco_checkpoint(path, build_backbone("resnet18"), head)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(head[0].weight, saved["module.encoder_q.fc.weight"])


def test_moco_checkpoint_into_wrong_backbone_names_keys_and_fix(tmp_path) -> None:
    path, _ = _moco_official(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, build_backbone("resnet50"))
    msg = str(info.value)
    assert str(path) in msg and "resnet18" in msg and "strict=False" in msg
    with pytest.raises(CheckpointError, match="num_classes=0"):
        load_checkpoint(path, resnet18())  # a 1000-class fc has nothing to load from
    report = load_checkpoint(path, resnet18(), strict=False)
    assert report.missing_keys == ["fc.weight", "fc.bias"]


def test_invarlab_layout_round_trip() -> None:
    torch.manual_seed(5)
    src, head = (
        _randomise_bn(build_backbone("resnet18", stem="cifar", width=0.25)).eval(),
        simclr_head(128, 64),
    )
    ckpt = make_checkpoint(src, head, step=7)
    assert detect_layout(ckpt) == "invarlab" and ckpt["arch"]["stem"] == "cifar"
    dst, dst_head = build_backbone(**ckpt["arch"]).eval(), simclr_head(128, 64)
    report = load_checkpoint(ckpt, dst, dst_head)
    assert report.layout == "invarlab" and len(report.head_loaded_keys) == len(head.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    assert "head.0.weight" in load_checkpoint(ckpt, build_backbone(**ckpt["arch"])).ignored_keys


def test_load_checkpoint_detects_plain_torchvision_with_prefixes(tmp_path) -> None:
    ref = tv.models.resnet18()
    path = tmp_path / "lincls.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    report = load_checkpoint(path, build_backbone("resnet18"))
    assert report.layout == "torchvision" and report.ignored_keys == ["fc.weight", "fc.bias"]
    assert detect_layout(ref.state_dict()) == "torchvision"
    assert "resnet18 (stem 'imagenet', width 1" in describe_state_dict(ref.state_dict())


def test_checkpoint_user_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pth", build_backbone("resnet18"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        load_checkpoint(bad, build_backbone("resnet18"))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_checkpoint({"weights": {"a": torch.zeros(1)}}, build_backbone("resnet18"))
    assert issubclass(CheckpointError, UserError)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": resnet18().state_dict(), "args": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(CheckpointError, match=r"fractions\.Fraction.*trusted=True"):
        load_checkpoint(pickled, resnet18())
    assert load_checkpoint(pickled, resnet18(), trusted=True).layout == "torchvision"


def test_wrong_arch_names_both_and_strict_false_skips_mismatches() -> None:
    r50 = export_torchvision_state_dict(build_backbone("resnet50", num_classes=10))
    with pytest.raises(CheckpointError, match=r"looks like resnet50 .*the model is resnet18"):
        load_checkpoint(r50, build_backbone("resnet18"))
    report = load_checkpoint(r50, build_backbone("resnet18"), strict=False)
    assert (
        "layer1.0.conv1.weight" in report.mismatched_keys
        and "layer1.0.conv3.weight" in report.unexpected_keys
    )
    assert "conv1.weight" in report.loaded_keys


def test_build_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        build_backbone("resnt18")
    with pytest.raises(ConfigError, match="stem"):
        build_backbone("resnet18", stem="tiny")
    with pytest.raises(ConfigError, match="width"):
        build_backbone("resnet18", width=0)
    with pytest.raises(ConfigError, match="unknown head kind"):
        build_head("byol-ish", 512)
    assert build_backbone("ResNet-50").arch == "resnet50"


def test_heads_shapes() -> None:
    moco = moco_v2_head(512)
    assert [type(m) for m in moco] == [nn.Linear, nn.ReLU, nn.Linear]
    assert moco[0].weight.shape == (512, 512) and moco[2].weight.shape == (128, 512)
    simclr = build_head("simclr", 128, out_dim=64, hidden_dim=256)
    assert [type(m) for m in simclr] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert simclr[0].bias is None and simclr(torch.randn(4, 128)).shape == (4, 64)
    assert build_head("linear", 128, 10)(torch.randn(2, 128)).shape == (2, 10)


def test_momentum_update_equals_formula() -> None:
    online = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        online[0].bias.copy_(torch.tensor([-1.0, 1.0]))
        target[0].weight.copy_(torch.tensor([[0.0, 0.0], [10.0, -10.0]]))
        target[0].bias.copy_(torch.tensor([5.0, 5.0]))
        online[1].running_mean.copy_(torch.tensor([0.3, -0.3]))
    update_momentum(online, target, 0.9)
    # 0.9 * θk + 0.1 * θq, by hand
    assert torch.allclose(target[0].weight, torch.tensor([[0.1, 0.2], [9.3, -8.6]]))
    assert torch.allclose(target[0].bias, torch.tensor([4.4, 4.6]))
    assert torch.equal(target[1].running_mean, online[1].running_mean)  # buffers copied
    update_momentum(online, target, 1.0)  # m = 1 freezes the target
    assert torch.allclose(target[0].bias, torch.tensor([4.4, 4.6]))
    update_momentum(online, target, 0.0)  # m = 0 copies the online network
    assert torch.equal(target[0].weight, online[0].weight)


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(1 - 0.004 * 0.5)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    k, K = 30, 100
    assert cosine_momentum(k, K, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * k / K) + 1) / 2)
