"""LooC (PAPERS.md §3): the leave-one-out view sampler, the texture op, the losses against explicit loops of the
§3.4 formulas, per-space queues, LooC++ representations, real trainer steps and bit-identical resume."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from invarlab.errors import ConfigError
from invarlab.losses import info_nce_extra_negatives, info_nce_per_positive
from invarlab.methods import LooC, MethodConfig, build_method, load_looc, moco_loss
from invarlab.methods.looc import looc_loss
from invarlab.train import Trainer
from invarlab.train.config import TrainConfig
from invarlab.views import ViewConfig, ops
from invarlab.views.looc import LoocViewConfig, apply_looc_view, canonical_augs, looc_views
from invarlab.views.texture import TextureConfig, apply_texture, sample_texture, texture

ALL = ("colour", "rotation", "texture")
TINY = dict(backbone="resnet18", stem="cifar", width=0.125, view_size=16, proj_dim=16, queue_size=48)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


# ------------------------------------------------------------------------------------------------ views
def test_key_i_shares_exactly_augmentation_i_and_k0_shares_none() -> None:
    cfg = LoocViewConfig(augs=ALL, view=ViewConfig(blur_p=0.0))
    lv = looc_views(_images(64), 16, torch.Generator().manual_seed(1), cfg)
    assert len(lv.views) == 5 and lv.augs == ALL
    q = lv.params[0]

    def same(a, b, aug):  # every tensor of augmentation aug identical
        return all(torch.equal(a.atomic(aug)[n], b.atomic(aug)[n]) for n in a.atomic(aug))

    def differs(a, b, aug):  # a real redraw: the continuous draws differ in every sample
        if aug == "colour":
            return bool((a.view.jitter_factors != b.view.jitter_factors).any(1).all())
        if aug == "texture":
            return bool(
                (a.texture.gain != b.texture.gain).all() and (a.texture.phase != b.texture.phase).all()
            )
        # 4 equally likely quarter turns: about a quarter agree by chance, all 64 with probability 4^-64
        return 0 < int((a.view.rotation != b.view.rotation).sum()) < 64

    for j, k in enumerate(lv.params[1:]):  # j = 0 is k_0, j = i >= 1 is k_i
        for i, aug in enumerate(ALL, start=1):
            if i == j:
                assert same(k, q, aug), (j, aug)
            else:
                assert differs(k, q, aug), (j, aug)
        # crop and flip are redrawn for every view, k_i included
        assert not torch.equal(k.view.boxes, q.view.boxes) and not torch.equal(k.view.flip, q.view.flip)


def test_shared_augmentation_shows_in_the_pixels() -> None:
    """With the common augmentations set to the identity, k_colour is q rotated, and q's colour and rotation
    undone... : q = R_q C(x), k_colour = R_k C(x), so rotating k_colour by r_q - r_k gives q exactly."""
    view = ViewConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, blur_p=0.0, mean=None, std=None)
    cfg = LoocViewConfig(augs=("colour", "rotation"), view=view)
    x = _images(32)
    lv = looc_views(x, 16, torch.Generator().manual_seed(2), cfg)
    q, k0, k_colour, k_rot = lv.views
    turns = lv.params[0].view.rotation - lv.params[2].view.rotation
    assert torch.equal(ops.rot90(k_colour, turns), q)
    assert not torch.allclose(ops.rot90(k0, lv.params[0].view.rotation - lv.params[1].view.rotation), q)
    # k_rotation has q's rotation and another colour
    assert torch.equal(lv.params[3].view.rotation, lv.params[0].view.rotation) and not torch.allclose(
        k_rot, q
    )
    # views are a deterministic function of images and parameters
    assert torch.equal(apply_looc_view(x, lv.params[2]), k_colour)


def test_sampler_determinism_options_and_errors() -> None:
    x = _images(8)
    a = looc_views(x, 16, torch.Generator().manual_seed(3), LoocViewConfig(augs=ALL))
    b = looc_views(x, 16, torch.Generator().manual_seed(3), LoocViewConfig(augs=ALL))
    assert all(torch.equal(u, v) for u, v in zip(a.views, b.views, strict=True))
    # no leave-one-out: q and k_0 only (MoCo with the same augmentations)
    assert len(looc_views(x, 16, None, LoocViewConfig(augs=ALL, leave_one_out=False)).views) == 2
    # an augmentation not listed is not applied: no colour, no rotation, no texture
    lv = looc_views(x, 16, torch.Generator().manual_seed(4), LoocViewConfig(augs=("texture",)))
    p = lv.params[0]
    assert not p.view.jitter_applied.any() and not p.view.grayscale.any() and not p.view.rotation.any()
    lv = looc_views(x, 16, torch.Generator().manual_seed(4), LoocViewConfig(augs=("colour",)))
    assert not any(p.texture.applied.any() for p in lv.params)
    assert canonical_augs(["color", "Rotation"]) == ("colour", "rotation")
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        canonical_augs(["blur"])
    with pytest.raises(ConfigError, match="listed twice"):
        canonical_augs(["colour", "color"])
    with pytest.raises(ConfigError, match=r"looc_texture\.frequency"):
        TextureConfig(frequency=(0.1, 0.9)).validate()


def test_texture_op_against_its_formula() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 12, 12, generator=g, dtype=torch.float64) * 0.5 + 0.25
    n, j = 4, 2
    freq, theta, phase = (
        torch.rand(n, j, generator=g),
        torch.rand(n, j, generator=g),
        torch.rand(n, j, generator=g),
    )
    one, zero = torch.ones(n), torch.zeros(n)
    # gain 1, amplitude 0: the identity; gain 0: the Gaussian blur of the detail split
    assert torch.allclose(texture(x, one, zero, freq, theta, phase, 1.0, 7), x, atol=1e-12)
    assert torch.allclose(texture(x, zero, zero, freq, theta, phase, 1.0, 7), ops.gaussian_blur(x, 1.0, 7))
    # the grating overlay, pixel by pixel with math.sin (gain 1 so the detail split cancels)
    amp = torch.full((n,), 0.1)
    out = texture(x, one, amp, freq, theta, phase, 1.0, 7)
    for b, r, c in [(0, 0, 0), (1, 3, 7), (3, 11, 5)]:
        t = sum(
            math.sin(
                2 * math.pi * freq[b, i] * (c * math.cos(theta[b, i]) + r * math.sin(theta[b, i]))
                + phase[b, i]
            )
            for i in range(j)
        )
        expected = (x[b, :, r, c] + 0.1 * t / j).clamp(0, 1)
        assert torch.allclose(out[b, :, r, c], expected, atol=1e-6)
    # samples not drawn for texture are returned unchanged
    params = sample_texture(n, TextureConfig(p=0.5), torch.Generator().manual_seed(6))
    params = type(params)(**{**params.__dict__, "applied": torch.tensor([True, False, True, False])})
    y = apply_texture(x, params)
    assert torch.equal(y[1], x[1]) and torch.equal(y[3], x[3]) and not torch.allclose(y[0], x[0])


# ----------------------------------------------------------------------------------------------- losses
def _log_ratio(q: torch.Tensor, pos: torch.Tensor, negs: list[torch.Tensor], t: float) -> float:
    """log [ exp(q·pos/t) / (exp(q·pos/t) + Σ exp(q·n/t)) ], one scalar at a time."""
    a = math.exp(float(q @ pos) / t)
    return math.log(a / (a + sum(math.exp(float(q @ n) / t) for n in negs)))


def test_generic_losses_equal_explicit_loops() -> None:
    b, p, e, k, d, t = 4, 3, 2, 6, 5, 0.3
    q, keys, extra, bank = (
        _unit(b, d, seed=1),
        _unit(b, p, d, seed=2),
        _unit(b, e, d, seed=3),
        _unit(k, d, seed=4),
    )
    expected = -sum(_log_ratio(q[i], keys[i, j], list(bank), t) for i in range(b) for j in range(p)) / (b * p)
    assert info_nce_per_positive(q, keys, bank, t).item() == pytest.approx(expected, rel=1e-12)
    expected = -sum(_log_ratio(q[i], keys[i, 0], list(extra[i]) + list(bank), t) for i in range(b)) / b
    assert info_nce_extra_negatives(q, keys[:, 0], extra, bank, t).item() == pytest.approx(
        expected, rel=1e-12
    )
    # an empty bank: only the positive in the softmax, log 1 = 0
    assert info_nce_per_positive(q, keys, bank[:0], t).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("multi_positive", [True, False])
@pytest.mark.parametrize("intra", [True, False])
def test_looc_loss_equals_the_papers_formula(multi_positive: bool, intra: bool) -> None:
    """PAPERS.md §3.4, written out: L_0 over all J keys (or k_0), L_i with k_i positive and the other keys of
    the image negative (or not), averaged over the n + 1 spaces."""
    b, n, d, t = 3, 2, 4, 0.2
    spaces = n + 1
    queries = [_unit(b, d, seed=10 + i) for i in range(spaces)]
    keys = [_unit(b, n + 1, d, seed=20 + i) for i in range(spaces)]
    queues = [_unit(5 + i, d, seed=30 + i) for i in range(spaces)]
    per_space = []
    for i in range(spaces):
        total = 0.0
        for s in range(b):
            q, ks, bank = queries[i][s], keys[i][s], list(queues[i])
            if i == 0:
                pos = range(n + 1) if multi_positive else [0]
                total -= sum(_log_ratio(q, ks[j], bank, t) for j in pos) / len(pos)
            else:
                own = [ks[j] for j in range(n + 1) if j != i] if intra else []
                total -= _log_ratio(q, ks[i], own + bank, t)
        per_space.append(total / b)
    loss, parts = looc_loss(queries, keys, queues, t, multi_positive, intra)
    assert parts.tolist() == pytest.approx(per_space, rel=1e-12)
    assert loss.item() == pytest.approx(sum(per_space) / spaces, rel=1e-12)


# ----------------------------------------------------------------------------------------------- method
def _looc(**kw) -> LooC:
    torch.manual_seed(0)
    return build_method(MethodConfig(name="looc", **{**TINY, **kw}))  # type: ignore[return-value]


def _step_embeddings(m: LooC, x: torch.Tensor, seed: int):
    """The step's own views and embeddings, recomputed from a generator in the same state."""
    g = torch.Generator().manual_seed(seed)
    lv = m.make_looc_views(x, g)
    with torch.no_grad():
        return m.encode_queries(lv.query), m.encode_keys(lv.keys, g)


def test_a_real_step_is_the_formula_on_its_own_embeddings_and_fills_each_queue() -> None:
    m = _looc(looc_augs=list(ALL), queue_init="empty")
    x = _images(8)
    m.training_step(x, None, torch.Generator().manual_seed(0))  # something in the queues
    negatives = [qu.features.clone() for qu in m.queues]
    queries, keys = _step_embeddings(m, x, seed=1)
    out = m.training_step(x, torch.arange(8), torch.Generator().manual_seed(1))
    expected, _ = looc_loss(queries, keys, negatives, m.temperature)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.metrics) >= {"loss", "loss_invariant", "loss_colour", "loss_rotation", "loss_texture"}
    # each space's queue holds that space's k_0 embeddings, after the first step's
    for i, queue in enumerate(m.queues):
        assert queue.num_valid == 16
        assert torch.allclose(queue.features[8:], keys[i][:, 0], atol=1e-5)
        assert torch.equal(queue.feature_labels[8:], torch.arange(8))
    assert not torch.allclose(m.queues[0].features, m.queues[1].features)
    # looc_enqueue: all puts every key of every image in, image-major
    m = _looc(looc_augs=["colour"], queue_init="empty", looc_enqueue="all")
    _, keys = _step_embeddings(m, x, seed=2)
    m.training_step(x, None, torch.Generator().manual_seed(2))
    assert m.queues[1].num_valid == 16
    assert torch.allclose(m.queues[1].features, keys[1].reshape(16, -1), atol=1e-5)


def test_without_leave_one_out_it_is_moco() -> None:
    m = _looc(looc_leave_one_out=False)
    assert m.num_spaces == 1 and len(m.heads) == 1 and len(m.queues) == 1
    x = _images(8)
    negatives = m.queues[0].features.clone()
    queries, keys = _step_embeddings(m, x, seed=3)
    out = m.training_step(x, None, torch.Generator().manual_seed(3))
    expected, _ = moco_loss(queries[0], keys[0][:, 0], negatives, m.temperature)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_looc_plus_concatenation_dimension_and_order() -> None:
    m = _looc(looc_augs=["colour", "rotation"])
    x = torch.randn(4, 3, 16, 16)
    m.train()
    bn = m.backbone.bn1.running_mean.clone()
    r = m.representations(x)  # defaults: hidden layer, without V
    d, h = m.backbone.feature_dim, m.heads[0][0].out_features
    assert r.v.shape == (4, d) and r.plus.shape == (4, 3 * h) and len(r.z) == 3
    m.eval()
    v = m.backbone(x)
    for i in range(3):
        hidden = F.relu(F.linear(v, m.heads[i][0].weight, m.heads[i][0].bias))
        assert torch.allclose(r.plus[:, i * h : (i + 1) * h], hidden, atol=1e-6)
    m.train()
    assert m.training and m.heads.training and torch.equal(m.backbone.bn1.running_mean, bn)
    r = m.representations(x, layer="output", with_v=True)
    assert r.plus.shape == (4, d + 3 * 16)
    assert torch.allclose(r.plus[:, :d], r.v) and torch.allclose(r.plus[:, d + 16 : d + 32], r.z[1])
    assert torch.allclose(r.z[2].norm(dim=1), torch.ones(4))
    assert torch.allclose(m.features(x), r.v, atol=1e-6)  # LooC's V is the usual backbone feature
    with pytest.raises(ConfigError, match="no hidden layer"):
        _looc(proj_layers=1).representations(x, layer="hidden")


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="looc_augs"):
        _looc(looc_augs=["colour", "blur"])
    with pytest.raises(ConfigError, match=r"looc_texture\.strength"):
        _looc(looc_texture={"strength": 1})
    m = _looc(looc_texture={"p": 0.3, "frequency": [0.1, 0.2]})
    assert m.view_spec.texture.frequency == (0.1, 0.2)


# ---------------------------------------------------------------------------------------------- trainer
class Tiny(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        self.images, self.labels = _images(n, seed=7), torch.arange(n) % 4
        self.num_classes = 4

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), i


def _train_config(run: Path, mcfg: MethodConfig, steps: int = 4) -> TrainConfig:
    cfg = TrainConfig(batch_size=8, steps=steps, run_dir=str(run), device="cpu", seed=3, method=mcfg)
    cfg.checkpoint.every, cfg.checkpoint.keep = 2, 0
    cfg.log.every, cfg.log.tensorboard, cfg.log.progress = 1, False, False
    cfg.knn.every_epochs = 0
    cfg.optim.base_lr, cfg.optim.warmup_steps = 0.5, 0
    return cfg


def test_trainer_steps_move_parameters_fill_queues_and_resume_bit_identically(tmp_path: Path) -> None:
    mcfg = MethodConfig(name="looc", looc_augs=["colour", "rotation"], queue_init="empty", **TINY)

    def build() -> LooC:
        torch.manual_seed(0)
        return build_method(mcfg)  # type: ignore[return-value]

    full = Trainer(_train_config(tmp_path / "a", mcfg), build(), Tiny())
    before = {k: v.clone() for k, v in full.method.state_dict().items()}
    full.fit()
    after = full.method.state_dict()
    for part in ("backbone.conv1.weight", "heads.2.0.weight", "backbone_momentum.conv1.weight"):
        assert not torch.equal(before[part], after[part]), part
    assert [int(q.total) for q in full.method.queues] == [32, 32, 32]

    victim, calls = build(), []
    step_fn = victim.training_step

    def dies_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return step_fn(*args)

    victim.training_step = dies_at_step_4  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        Trainer(_train_config(tmp_path / "b", mcfg), victim, Tiny()).fit()
    resumed = Trainer(_train_config(tmp_path / "b", mcfg), build(), Tiny())
    resumed.fit()
    b = resumed.method.state_dict()
    assert after.keys() == b.keys() and all(torch.equal(after[k], b[k]) for k in after)
    # the run folder rebuilds the model for LooC++ evaluations
    loaded = load_looc(tmp_path / "b")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded.representations(x).plus, resumed.method.representations(x).plus)


# ---------------------------------------------------------------------------------------------- presets
def test_p3_presets_load_and_build_the_table_rows() -> None:
    from invarlab.cli_eval import load_run_config

    root = Path(__file__).resolve().parents[1] / "configs" / "p3"
    expected = {
        "moco": (("colour",), 1),
        "moco_rotation": (("colour", "rotation"), 1),
        "looc_colour": (("colour",), 2),
        "looc_colour_rotation": (("colour", "rotation"), 3),
        "looc_colour_rotation_texture": (ALL, 4),
    }
    expected.update({f"looc_plus_{k[5:]}": v for k, v in expected.items() if k.startswith("looc_")})
    assert sorted(p.stem for p in root.glob("*.yaml")) == sorted(expected)
    for name, (augs, spaces) in expected.items():
        cfg = load_run_config([str(root / f"{name}.yaml"), "train.method.width=0.0625"], None)
        m = build_method(cfg.train.method)
        assert isinstance(m, LooC) and (m.augs, m.num_spaces) == (augs, spaces), name
        assert cfg.train.run_dir == f"runs/p3/{name}" and cfg.train.method.view_size == 32
