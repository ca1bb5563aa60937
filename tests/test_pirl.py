"""PIRL: the jigsaw transform, the memory bank rule, the NCE loss against the formula computed another way, and a
few real trainer steps (the trainer hands PIRL each sample's position in the training set)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from invarlab.errors import ConfigError, DataError
from invarlab.methods import PIRL, MethodConfig, build_method
from invarlab.methods.pirl import MemoryBank, memory_bank_update, pirl_info_nce, pirl_nce
from invarlab.nets import build_backbone
from invarlab.train import EpochBatchSampler, Trainer
from invarlab.train.config import TrainConfig
from invarlab.views import ViewConfig
from invarlab.views.jigsaw import jigsaw_views

TINY = {"backbone": "resnet18", "stem": "cifar", "width": 0.125, "view_size": 16}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plain(**kw) -> ViewConfig:
    """Geometry only: no colour, no blur, no normalisation (pixels stay comparable to the source)."""
    base = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=None, std=None)
    base.update(kw)
    return ViewConfig(**base).validate()


def _blocks(image: torch.Tensor, side: int) -> torch.Tensor:
    """The 9 ``side`` x ``side`` blocks of a (3, 3 side, 3 side) image in row-major order, as floats in [0, 1]."""
    x = image.float() / 255
    return torch.stack(
        [x[:, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(3) for c in range(3)]
    )


# -------------------------------------------------------------------------------------------------- jigsaw
def test_jigsaw_permutes_exactly_the_nine_patches() -> None:
    g0 = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=g0)
    # Whole-image crop, full cells, no flip: the grid patches are exactly the 9 blocks of the image.
    cfg = _plain(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    patches, params = jigsaw_views(images, 8, torch.Generator().manual_seed(1), cfg, patch_fraction=1.0)
    grid, _ = jigsaw_views(
        images, 8, torch.Generator().manual_seed(1), cfg, patch_fraction=1.0, shuffle=False
    )
    assert patches.shape == (4, 9, 3, 8, 8)
    for b in range(4):
        blocks = _blocks(images[b], 8)
        assert torch.allclose(grid[b], blocks, atol=1e-6)
        assert sorted(params.perm[b].tolist()) == list(range(9))
        for j in range(9):  # patch j is the block the permutation names, and each block appears once
            assert torch.allclose(patches[b, j], blocks[params.perm[b, j]], atol=1e-6)
        assert torch.allclose(patches[b, params.inverse_perm()[b]], blocks, atol=1e-6)
    assert not all(torch.equal(p, torch.arange(9)) for p in params.perm)  # really shuffled
    # A flip mirrors the grid: column c reads source column 2 - c, and every patch is mirrored.
    flipped, _ = jigsaw_views(
        images,
        8,
        torch.Generator().manual_seed(1),
        _plain(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0),
        patch_fraction=1.0,
        shuffle=False,
    )
    for b in range(4):
        assert torch.allclose(flipped[b], _blocks(images[b].flip(-1), 8), atol=1e-6)


def test_inverse_permutation_restores_the_patch_features() -> None:
    """With the full MoCo v2 photometric recipe (own draw per patch): features of the shuffled patches,
    put back by the inverse permutation, are the features of the patches in grid order."""
    torch.manual_seed(0)
    images = torch.randint(
        0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    cfg = ViewConfig()
    shuffled, params = jigsaw_views(images, 12, torch.Generator().manual_seed(5), cfg)
    grid, params2 = jigsaw_views(images, 12, torch.Generator().manual_seed(5), cfg, shuffle=False)
    assert torch.equal(params.boxes, params2.boxes) and torch.equal(params.perm, params2.perm)
    net = build_backbone("resnet18", stem="cifar", width=0.125).eval()
    with torch.no_grad():
        f_shuffled = net(shuffled.flatten(0, 1)).view(3, 9, -1)
        f_grid = net(grid.flatten(0, 1)).view(3, 9, -1)
    inv = params.inverse_perm()
    restored = torch.gather(f_shuffled, 1, inv[:, :, None].expand_as(f_shuffled))
    assert torch.allclose(restored, f_grid, atol=1e-5)
    assert not torch.allclose(f_shuffled, f_grid, atol=1e-3)
    # Patches sit inside their cells of the crop, one per cell.
    sides = params.boxes[..., 2:]
    assert bool((sides >= 1).all())


# ------------------------------------------------------------------------------------------- memory bank
def test_memory_bank_momentum_update_equals_the_formula() -> None:
    torch.manual_seed(0)
    mu = 0.3
    bank = MemoryBank(10, 5, mu, torch.Generator().manual_seed(1))
    before = bank.bank.clone().numpy().astype(np.float64)
    rows = torch.tensor([7, 2, 4])
    feats = torch.nn.functional.normalize(torch.randn(3, 5), dim=1)
    bank.update(rows, feats)
    after = bank.bank.numpy()
    f = feats.numpy().astype(np.float64)
    for i, r in enumerate(rows.tolist()):
        v = mu * before[r] + (1 - mu) * f[i]
        assert np.allclose(after[r], v / np.sqrt((v**2).sum()), atol=1e-6)
    untouched = [r for r in range(10) if r not in rows.tolist()]
    assert np.array_equal(after[untouched], before[untouched].astype(np.float32))
    assert torch.allclose(
        memory_bank_update(torch.eye(2), torch.eye(2).flip(0), 0.5).norm(dim=1), torch.ones(2)
    )


# ---------------------------------------------------------------------------------------------- NCE loss
def test_pirl_nce_equals_the_paper_formula() -> None:
    g = torch.Generator().manual_seed(3)
    b, n, d, tau, size = 4, 6, 8, 0.2, 1000
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).double()
    a = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).double()
    u = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).double()
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 2] = mask[3, 0] = False
    log_z = 2.5

    def h(x: torch.Tensor, y: torch.Tensor) -> float:  # PIRL eq. 2 with the partition: P = exp(s/τ) / Z
        p = math.exp(float(x @ y) / tau) / math.exp(log_z)
        return p / (p + n / size)

    want = 0.0
    for i in range(b):
        want -= math.log(h(a[i], q[i]))
        want -= sum(math.log(1 - h(q[i], u[k])) for k in range(n) if mask[i, k])
    want /= b
    got = pirl_nce(q, a, u, tau, log_z + math.log(n / size), mask)
    assert float(got) == pytest.approx(want, rel=1e-10)
    no_mask = pirl_nce(q, a, u, tau, log_z + math.log(n / size))
    assert float(no_mask) > float(got)


def test_pirl_info_nce_equals_the_softmax_formula() -> None:
    """The cross-entropy form against the softmax written out term by term, and against torch's cross_entropy
    on the logits [positive, unmasked negatives]."""
    g = torch.Generator().manual_seed(4)
    b, n, d, tau = 5, 7, 8, 0.1
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).double()
    a = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).double()
    u = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).double()
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 3] = mask[4, 6] = mask[4, 0] = False
    want, xent = 0.0, 0.0
    for i in range(b):
        pos = math.exp(float(q[i] @ a[i]) / tau)
        neg = sum(math.exp(float(q[i] @ u[k]) / tau) for k in range(n) if mask[i, k])
        want -= math.log(pos / (pos + neg)) / b
        logits = torch.cat([(q[i] @ a[i]).reshape(1), (u[mask[i]] @ q[i])]) / tau
        xent += float(torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long))) / b
    got = float(pirl_info_nce(q, a, u, tau, mask))
    assert got == pytest.approx(want, rel=1e-10) and got == pytest.approx(xent, rel=1e-10)
    assert float(pirl_info_nce(q, a, u, tau)) > got  # more negatives, larger loss


def test_partition_is_estimated_once_from_the_jigsaw_scores() -> None:
    """Z = |D| mean exp(s/τ) over the first step's jigsaw scores against the own rows and the negatives
    (Wu et al.; VISSL), then fixed: c = log Z + log(N / |D|)."""
    method = build_method(_pirl_cfg(pirl_bank_size=50))
    g = torch.Generator().manual_seed(5)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    q, pos, neg = unit(4, 16), unit(4, 16), unit(6, 16)
    scores = [float(q[i] @ pos[i]) for i in range(4)] + [
        float(q[i] @ neg[k]) for i in range(4) for k in range(6)
    ]
    mean = sum(math.exp(s / 0.07) for s in scores) / len(scores)
    c = method._log_noise(q, pos, neg, 6, first_term=True)
    assert float(method.log_z) == pytest.approx(math.log(50 * mean), rel=1e-5)
    assert float(c) == pytest.approx(math.log(50 * mean) + math.log(6 / 50), rel=1e-5)
    again = method._log_noise(unit(4, 16), unit(4, 16), unit(6, 16), 6, first_term=True)  # later: the same Z
    assert float(again) == pytest.approx(float(c), rel=1e-6)
    # running [ours]: every call re-estimates Z from its own query's scores by the same formula
    running = build_method(_pirl_cfg(pirl_bank_size=50, pirl_normalizer="running"))
    assert float(running._log_noise(q, pos, neg, 6, first_term=True)) == pytest.approx(float(c), rel=1e-5)
    q2, pos2, neg2 = unit(4, 16), unit(4, 16), unit(6, 16)
    mean2 = sum(math.exp(float(q2[i] @ v) / 0.07) for i in range(4) for v in [pos2[i], *neg2]) / 28
    c2 = running._log_noise(q2, pos2, neg2, 6, first_term=False)
    assert float(c2) == pytest.approx(math.log(mean2) + math.log(6), rel=1e-5)
    assert float(running.log_z) == pytest.approx(math.log(50 * mean), rel=1e-5)  # log_z: the first term's


# ------------------------------------------------------------------------------------------------ method
class Shapes(torch.utils.data.Dataset):
    """``n`` uint8 32x32 images: a bright square on a dark background, its colour by class."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 60, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % 3
        for i in range(n):
            y, x = (int(v) for v in torch.randint(0, 16, (2,), generator=g))
            self.images[i, int(self.labels[i]), y : y + 14, x : x + 14] = 230
        self.num_classes = 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], int(self.labels[i]), 1000 + i  # an index that is no bank row


def _pirl_cfg(**kw) -> MethodConfig:
    base = dict(
        name="pirl", temperature=0.07, pirl_negatives=16, pirl_patch_size=8, proj_dim=16, pirl_patch_dim=8
    )
    base.update(TINY)
    base.update(kw)
    return MethodConfig(**base)


def test_pirl_needs_rows_and_a_bank() -> None:
    torch.manual_seed(0)
    method = build_method(_pirl_cfg())
    images, g = Shapes(4).images, torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="pirl_bank_size"):
        method.training_step(images, None, g, torch.arange(4))
    method.prepare_train_set(Shapes(8), seed=0)
    with pytest.raises(DataError, match="row in the memory bank"):
        method.training_step(images, None, g)
    with pytest.raises(DataError, match=r"\[0, 7\]"):
        method.training_step(images, None, g, torch.tensor([0, 1, 2, 8]))
    with pytest.raises(ConfigError, match="smaller than the training set"):
        build_method(_pirl_cfg(pirl_bank_size=4)).prepare_train_set(Shapes(8), 0)
    with pytest.raises(ConfigError, match="pirl_jigsaw_scale"):
        build_method(_pirl_cfg(pirl_jigsaw_scale=[0.0, 1.0]))
    # The grid is cut from its own crop (VISSL: 0.6-1 of the image), not from the image view's 0.2-1.
    assert method.jigsaw_view_config.scale == (0.6, 1.0) and method.view_config.scale == (0.2, 1.0)
    # The cross-entropy form needs no partition estimate; h_pos is then the positive's softmax probability.
    ce = build_method(_pirl_cfg(pirl_loss="cross_entropy"))
    ce.prepare_train_set(Shapes(8), seed=0)
    out = ce.training_step(images, None, g, torch.tensor([0, 1, 2, 3]))
    assert torch.isnan(ce.log_z) and out.metrics["log_z"] == 0.0 and 0 < out.metrics["h_pos_image"] < 1
    assert out.metrics["loss_image"] > 0 and 0 <= out.metrics["acc_image"] <= 1
    # NCE: estimate fixes Z at the first step; running re-estimates it (and the image term's own) every step.
    for normalizer in ("estimate", "running"):
        nce = build_method(_pirl_cfg(pirl_normalizer=normalizer))
        nce.prepare_train_set(Shapes(8), seed=0)
        steps = [nce.training_step(images, None, g, torch.tensor([0, 1, 2, 3])).metrics for _ in range(2)]
        assert (steps[0]["log_z"] == steps[1]["log_z"]) == (normalizer == "estimate")
        assert all(("log_z_image" in m) == (normalizer == "running") for m in steps)


def test_pirl_trains_through_the_trainer(tmp_path) -> None:
    torch.manual_seed(0)
    method = build_method(_pirl_cfg())
    assert isinstance(method, PIRL)
    data = Shapes(24)
    cfg = TrainConfig(batch_size=8, steps=3, amp="none", run_dir=str(tmp_path), device="cpu", seed=1)
    cfg.log.tensorboard, cfg.log.progress, cfg.knn.every_epochs = False, False, 0
    cfg.optim.base_lr = 1.0
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    trainer = Trainer(cfg, method, data)
    bank0 = method.memory.bank.clone()
    assert method.memory.size == len(data)  # sized from the training set
    result = trainer.fit()
    assert result.step == 3 and math.isfinite(result.metrics["loss"])
    moved = [k for k, v in method.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in moved)
    assert {"head.0.weight", "patch_head.weight", "jigsaw_head.weight"} <= set(moved)
    # The rows updated are the positions the sampler served (not the dataset's own index 1000 + i).
    served = sorted(i for batch in EpochBatchSampler(24, 8, seed=1, epoch=0) for i in batch)
    changed = torch.nonzero((method.memory.bank != bank0).any(dim=1)).flatten().tolist()
    assert changed == served
    assert torch.isfinite(method.log_z)
    assert {"loss_jigsaw", "loss_image", "h_pos_jigsaw", "acc_image", "log_z"} <= set(result.metrics)


@pytest.mark.parametrize("bank_init", ["random", "embed"])
def test_pirl_resumes_bit_identically(tmp_path, bank_init) -> None:
    """Memory bank, partition estimate and negative draws continue exactly after a restart. With
    ``pirl_bank_init=embed`` the resumed run's own initial embeddings (another init) must not replace the bank
    of the checkpoint: the trainer calls the hook before it loads the checkpoint."""

    def run(run_dir, stop_at=None, seed_model=0):
        torch.manual_seed(seed_model)
        cfg = TrainConfig(batch_size=8, steps=4, amp="none", run_dir=str(run_dir), device="cpu", seed=1)
        cfg.log.tensorboard, cfg.log.progress, cfg.knn.every_epochs, cfg.checkpoint.every = False, False, 0, 2
        method = build_method(_pirl_cfg(pirl_bank_init=bank_init))
        Trainer(cfg, method, Shapes(24)).fit(stop_at=stop_at)
        return method

    full = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b", seed_model=9)  # another init: everything must come from the checkpoint
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "memory.bank" in a and torch.isfinite(a["log_z"])


# ------------------------------------------------------------------------------------------- bank init
def _oracle_embeddings(method: PIRL, images: torch.Tensor, chunks: list[int], bn_train: bool = True):
    """f(I) computed another way: torch's antialiased bilinear resize of the whole image to the view size,
    ImageNet normalisation by hand, then backbone and head over consecutive chunks of the given sizes."""
    x = torch.nn.functional.interpolate(
        images.float() / 255, size=(16, 16), mode="bilinear", antialias=True, align_corners=False
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    x = (x - mean) / std
    method.train(bn_train)
    with torch.no_grad():
        out = [torch.nn.functional.normalize(method.head(method.backbone(c)), dim=1) for c in x.split(chunks)]
    return torch.cat(out)


def test_bank_init_embed_holds_each_images_initial_embedding() -> None:
    import copy

    data = Shapes(24)
    torch.manual_seed(0)
    method = build_method(_pirl_cfg(pirl_bank_init="embed"))
    method.eval()  # the hook must restore whatever modes it found
    oracle = copy.deepcopy(method)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.prepare_train_set(data, seed=0)
    bank = method.memory.bank
    expected = _oracle_embeddings(copy.deepcopy(oracle), data.images, [24])  # 24 < 256: one batch
    torch.testing.assert_close(bank, expected, atol=1e-5, rtol=1e-5)
    # Running statistics and counters untouched, modes restored: training starts as with random init.
    after = method.state_dict()
    assert before.keys() == {k for k in after if not k.startswith("memory.")}
    for k in before:  # log_z is NaN until the first step
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, equal_nan=True)
    assert not any(m.training for n, m in method.named_modules() if not n.startswith("memory"))
    # Smaller batches: 3 chunks of 8 in index order; train-mode batch norm makes the rows batch-dependent,
    # and eval mode (default running statistics) would give other rows again.
    m3 = copy.deepcopy(oracle)
    m3.prepare_train_set(data, seed=0)  # bank sized and filled with the 256 batch; now refill with batch 10
    m3.init_bank_from_embeddings(data, batch_size=10)
    chunked = _oracle_embeddings(copy.deepcopy(oracle), data.images, [8, 8, 8])
    torch.testing.assert_close(m3.memory.bank, chunked, atol=1e-5, rtol=1e-5)
    assert (chunked - expected).abs().max() > 1e-3
    evaluated = _oracle_embeddings(copy.deepcopy(oracle), data.images, [24], bn_train=False)
    assert (evaluated - expected).abs().max() > 1e-3
    # Split batch norm: each chunk (12 images, not divisible by 5 splits) is normalised as a whole.
    torch.manual_seed(0)
    split = build_method(_pirl_cfg(pirl_bank_init="embed", bn_splits=5))
    torch.manual_seed(0)
    plain = build_method(_pirl_cfg())
    split.prepare_train_set(Shapes(4), seed=0)  # sizes nothing useful; the call below fills rows 0-23
    split.memory = MemoryBank(24, 16, 0.5)
    split.init_bank_from_embeddings(data, batch_size=20)
    halves = _oracle_embeddings(plain, data.images, [12, 12])
    torch.testing.assert_close(split.memory.bank, halves, atol=1e-5, rtol=1e-5)


def test_bank_init_random_keeps_seeded_unit_vectors() -> None:
    data = Shapes(24)
    torch.manual_seed(0)
    method = build_method(_pirl_cfg())
    assert method.cfg.pirl_bank_init == "random"
    method.prepare_train_set(data, seed=5)
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        method.memory.bank, torch.nn.functional.normalize(torch.randn(24, 16, generator=g))
    )
    # A bank larger than the data: embed fills the data's rows only, the rest stay the random unit vectors.
    torch.manual_seed(0)
    big = build_method(_pirl_cfg(pirl_bank_init="embed", pirl_bank_size=30))
    random_rows = big.memory.bank.clone()
    big.prepare_train_set(data, seed=5)
    assert torch.equal(big.memory.bank[24:], random_rows[24:])
    assert not torch.allclose(big.memory.bank[:24], random_rows[:24])
    torch.testing.assert_close(big.memory.bank.norm(dim=1), torch.ones(30))
