r"""PIRL: Pretext-Invariant Representation Learning (Misra & van der Maaten, CVPR 2020) with the jigsaw pretext.

P1 measures the invariances of a PIRL ResNet-50 (PAPERS.md §1.2: the authors' own reproduction, 128-d).
PAPERS.md does not spell PIRL out; this follows the PIRL paper, with the details it leaves open taken from
VISSL's PIRL config and NCE loss (written by PIRL's first author; docs/pirl.md cites each). Per step, for a
batch of images ``I`` with their rows ``i`` in the memory bank:

1. one view ``v_I`` of each image (the MoCo v2 recipe by default) and its embedding
   ``f(v_I) = normalize(head(φ(v_I)))``;
2. the jigsaw transform ``I^t`` (:mod:`invarlab.views.jigsaw`) of its own crop (area ``pirl_jigsaw_scale``,
   VISSL's 0.6-1): nine patches, each encoded by the same backbone
   ``φ``, projected by a shared linear map to ``pirl_patch_dim``, concatenated in their shuffled order and
   projected to ``g(v_{I^t})`` (``proj_dim``, normalised);
3. ``N`` negatives ``m_{I'}`` drawn uniformly from the memory bank, and the positive ``m_I`` (bank row ``i``);
4. the NCE loss :func:`pirl_nce` (or, with ``pirl_loss=cross_entropy``, :func:`pirl_info_nce`) of both
   embeddings against the bank, mixed with ``λ``:

       L = λ L_NCE(m_I, g(v_{I^t})) + (1 − λ) L_NCE(m_I, f(v_I))

5. the bank rows of the batch are moved towards ``f(v_I)``: ``m_I ← normalize(μ m_I + (1 − μ) f(v_I))``
   (:func:`memory_bank_update`), after the loss used the old rows.

The bank starts as random unit vectors (the paper, VISSL) or, with ``pirl_bank_init=embed``, as every image's
embedding by the initial network (:meth:`PIRL.init_bank_from_embeddings`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.data.collate import collate_uint8
from invarlab.distributed import SplitBatchNorm2d, concat_all_gather, convert_to_split_bn, is_distributed
from invarlab.errors import ConfigError, DataError
from invarlab.methods.base import Method, MethodConfig, StepOutput
from invarlab.nets.heads import ProjectionHead
from invarlab.views.jigsaw import jigsaw_views
from invarlab.views.ops import normalize, resized_crop, to_float

__all__ = ["PIRL", "MemoryBank", "memory_bank_update", "pirl_info_nce", "pirl_nce"]

GRID = 3  # the jigsaw's 3 x 3 grid
BANK_INIT_BATCH = 256  # pirl_bank_init=embed: largest batch of the initial pass (train-mode batch norm)


def memory_bank_update(rows: Tensor, features: Tensor, momentum: float) -> Tensor:
    """``normalize(μ m + (1 − μ) f)`` row by row: the bank's exponential moving average of ``f(v_I)``."""
    return F.normalize(momentum * rows + (1.0 - momentum) * features.to(rows.dtype), dim=1)


def _loss_inputs(query: Tensor, anchor: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``query``, ``anchor`` ``(B, D)`` and ``negatives`` ``(N, D)`` checked and promoted to at least float32."""
    if query.shape != anchor.shape or query.ndim != 2:
        raise ValueError(
            f"query and anchor must both be (B, D), got {tuple(query.shape)}, {tuple(anchor.shape)}"
        )
    if negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"negatives must be (N, {query.shape[1]}), got {tuple(negatives.shape)}")
    dtype = torch.promote_types(query.dtype, torch.float32)
    return query.to(dtype), anchor.to(dtype), negatives.to(dtype)


def pirl_nce(
    query: Tensor,
    anchor: Tensor,
    negatives: Tensor,
    temperature: float,
    log_noise: float | Tensor,
    negative_mask: Tensor | None = None,
) -> Tensor:
    r"""PIRL's NCE loss ``L_NCE(anchor, query)`` (PIRL eqs. 2-4), averaged over the batch.

    With L2-normalised ``query`` ``q`` ``(B, D)``, ``anchor`` ``a`` ``(B, D)`` (the bank row of the same
    image), bank ``negatives`` ``u`` ``(N, D)``, ``s(x, y) = x·y`` and

        h(x, y) = exp(s/τ) / (exp(s/τ) + Z N/|D|) = σ(s(x, y)/τ − c),    c = log Z + log(N / |D|)

    (the probability that a pair comes from the data rather than from N uniform noise draws over |D| images,
    with partition estimate Z), the loss is

        L = −(1/B) Σ_b [ log h(a_b, q_b) + Σ_n mask_{b,n} log(1 − h(q_b, u_n)) ]

    ``log_noise`` is ``c``. ``negative_mask`` ``(B, N)`` is false where ``u_n`` is the image itself (PIRL
    draws negatives from D excluding I). ``−log σ(x)`` and ``−log(1 − σ(x))`` are taken as softplus for
    stability. Logits are float32 also under autocast.
    """
    q, a, u = _loss_inputs(query, anchor, negatives)
    with torch.autocast(q.device.type, enabled=False):
        pos = (q * a).sum(dim=1) / temperature - log_noise
        neg = q @ u.T / temperature - log_noise
        loss_neg = F.softplus(neg)
        if negative_mask is not None:
            loss_neg = torch.where(negative_mask, loss_neg, torch.zeros_like(loss_neg))
        return (F.softplus(-pos) + loss_neg.sum(dim=1)).mean()


def pirl_info_nce(
    query: Tensor, anchor: Tensor, negatives: Tensor, temperature: float, negative_mask: Tensor | None = None
) -> Tensor:
    r"""The softmax cross-entropy form (InfoNCE; VISSL's ``loss_type: cross_entropy``), averaged over the batch:

        L = −(1/B) Σ_b log [ exp(q_b·a_b/τ) / (exp(q_b·a_b/τ) + Σ_n mask_{b,n} exp(q_b·u_n/τ)) ]

    Shapes as in :func:`pirl_nce`; no partition estimate is needed. Logits are float32 also under autocast.
    """
    q, a, u = _loss_inputs(query, anchor, negatives)
    with torch.autocast(q.device.type, enabled=False):
        pos = (q * a).sum(dim=1, keepdim=True) / temperature
        neg = q @ u.T / temperature
        if negative_mask is not None:
            neg = neg.masked_fill(~negative_mask, float("-inf"))
        return (torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1) - pos[:, 0]).mean()


class MemoryBank(nn.Module):
    """``(size, dim)`` L2-normalised rows, one per training image, starting as random unit vectors. A buffer,
    so checkpoints hold it and a resumed run continues with the same bank."""

    bank: Tensor

    def __init__(
        self, size: int, dim: int, momentum: float, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if size < 2:
            raise ConfigError(f"a memory bank needs at least 2 rows (one image and a negative), got {size}")
        self.size, self.dim, self.momentum = int(size), int(dim), float(momentum)
        self.register_buffer("bank", F.normalize(torch.randn(size, dim, generator=generator), dim=1))

    def sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` row indices drawn uniformly with replacement (on the generator's device)."""
        device = generator.device if generator is not None else None
        return torch.randint(self.size, (n,), generator=generator, device=device)

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """Rows ``indices`` ← :func:`memory_bank_update` of their old value and ``features`` (detached)."""
        idx = indices.to(self.bank.device, torch.long)
        self.bank[idx] = memory_bank_update(self.bank[idx], features.detach(), self.momentum)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}"


class PIRL(Method):
    """Backbone ``φ``, image head ``f`` (``head``), patch head and jigsaw head ``g``, and a memory bank.

    The bank needs one row per training image: ``pirl_bank_size``, or (0) the size of the training set, which
    the trainer announces through :meth:`prepare_train_set`. Each step needs the batch's rows ``indices``
    (the trainer passes the samples' positions in the training set because :attr:`uses_indices` is set).
    """

    name = "pirl"
    default_views = "mocov2"
    uses_indices = True

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        super().__init__(cfg)
        d = self.backbone.feature_dim
        self.temperature = cfg.temperature
        self.head = ProjectionHead(
            d, cfg.proj_dim, cfg.proj_hidden_dim, num_layers=cfg.proj_layers, batch_norm=cfg.proj_batch_norm
        )
        self.patch_head = nn.Linear(d, cfg.pirl_patch_dim)
        self.jigsaw_head = nn.Linear(GRID * GRID * cfg.pirl_patch_dim, cfg.proj_dim)
        convert_to_split_bn(self.backbone, cfg.bn_splits)
        lo, hi = cfg.pirl_jigsaw_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"method.pirl_jigsaw_scale={list(cfg.pirl_jigsaw_scale)} must be [lo, hi] with 0 < lo <= hi <= 1 "
                "(area fractions of the image; VISSL's PIRL uses [0.6, 1.0])"
            )
        # The jigsaw's own crop: the view recipe with the grid crop's scale (VISSL crops patches separately).
        self.jigsaw_view_config = dataclasses.replace(self.view_config, scale=(float(lo), float(hi)))
        self.memory: MemoryBank | None = None
        if cfg.pirl_bank_size:
            self.memory = MemoryBank(cfg.pirl_bank_size, cfg.proj_dim, cfg.pirl_bank_momentum)
        # log Z of the NCE, fixed at the first step (NaN until then); a buffer so a resumed run keeps it.
        self.register_buffer("log_z", torch.tensor(float("nan")))

    def prepare_train_set(self, dataset: Dataset, seed: int) -> Dataset:
        """Size the memory bank to the training set (unless ``pirl_bank_size`` fixed it) and, with
        ``pirl_bank_init=embed``, fill its rows with the initial network's embeddings; data unchanged.

        The Trainer calls this once, before it loads a checkpoint, so a resumed run still gets the saved bank."""
        n = len(dataset)  # type: ignore[arg-type]
        if self.memory is None:
            g = torch.Generator().manual_seed(seed)
            self.memory = MemoryBank(n, self.cfg.proj_dim, self.cfg.pirl_bank_momentum, g)
        elif self.memory.size < n:
            raise ConfigError(
                f"method.pirl_bank_size={self.memory.size} is smaller than the training set ({n} images): "
                "set it to 0 (sized from the data) or to at least the number of training images"
            )
        if self.cfg.pirl_bank_init == "embed":
            self.init_bank_from_embeddings(dataset)
        return dataset

    def plain_view(self, images: Tensor) -> Tensor:
        """The un-augmented view of uint8 ``images``: the whole image resized (bilinear, antialiased, the views'
        resampling) to ``view_size`` and normalised with the view recipe's mean and std."""
        x = to_float(images)
        h, w = x.shape[-2:]
        box = torch.tensor([[0, 0, h, w]], dtype=torch.float32).expand(x.shape[0], 4)
        x = resized_crop(x, box, self.cfg.view_size)
        vc = self.view_config
        return normalize(x, vc.mean, vc.std) if vc.mean is not None and vc.std is not None else x

    @torch.no_grad()
    def init_bank_from_embeddings(self, dataset: Dataset, batch_size: int = BANK_INIT_BATCH) -> None:
        """Bank row ``i`` ← ``f(I_i) = normalize(head(φ(plain_view(I_i))))`` by the current (initial) network.

        Batch norm runs in training mode, as in every training step: at initialisation the running statistics
        are the defaults (mean 0, variance 1), so eval mode would feed un-normalised activations through the
        network. The images go in index order in ``ceil(n / batch_size)`` consecutive chunks of near-equal size
        (``torch.tensor_split``), so no chunk is tiny; split batch norm normalises each chunk as a whole.
        Running statistics, ``num_batches_tracked`` and every module's train/eval mode are restored: training
        starts from the same state as with ``random``. Under DDP rank 0 computes the rows and broadcasts them,
        so every rank holds the same bank. Rows past the data set (``pirl_bank_size`` > n) stay random.
        """
        assert self.memory is not None
        n = len(dataset)  # type: ignore[arg-type]
        bank = self.memory.bank
        rows = torch.empty(n, self.memory.dim, dtype=bank.dtype, device=bank.device)
        if not is_distributed() or dist.get_rank() == 0:
            rows.copy_(self._embed_all(dataset, n, batch_size))
        if is_distributed() and dist.get_world_size() > 1:
            # nccl moves only CUDA tensors; the Trainer calls this before moving the method to its device
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            buf = rows.to(dev) if dev is not None else rows
            dist.broadcast(buf, 0)
            rows = buf.to(bank.device)
        bank[:n] = rows

    def _embed_all(self, dataset: Dataset, n: int, batch_size: int) -> Tensor:
        modes = [(m, m.training) for m in self.modules()]
        buffers = [(b, b.clone()) for m in (self.backbone, self.head) for b in m.buffers()]
        splits = [(m, m.num_splits) for m in self.modules() if isinstance(m, SplitBatchNorm2d)]
        device = next(self.head.parameters()).device
        chunks = [c.tolist() for c in torch.arange(n).tensor_split(max(1, math.ceil(n / batch_size)))]
        out = []
        try:
            self.train()
            for m, _ in splits:
                m.num_splits = 1
            for images, _, _ in DataLoader(dataset, batch_sampler=chunks, collate_fn=collate_uint8):
                out.append(self.embed_image(self.plain_view(images.to(device))).float())
        finally:
            for m, was in modes:
                m.training = was
            for b, saved in buffers:
                b.copy_(saved)
            for m, s in splits:
                m.num_splits = s
        return torch.cat(out)

    def embed_image(self, x: Tensor) -> Tensor:
        """``f(v_I) = normalize(head(φ(x)))``."""
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def embed_jigsaw(self, patches: Tensor) -> Tensor:
        """``g(v_{I^t})`` of shuffled patches ``(B, 9, 3, p, p)``: every patch through ``φ`` and the shared
        patch head, the nine vectors concatenated in the given (shuffled) order, a linear map, normalised."""
        b, k = patches.shape[:2]
        per_patch = self.patch_head(self.backbone(patches.flatten(0, 1)))
        return F.normalize(self.jigsaw_head(per_patch.reshape(b, k * per_patch.shape[1])), dim=1)

    def _check_indices(self, indices: Tensor | None, batch: int) -> Tensor:
        if self.memory is None:
            raise ConfigError(
                "PIRL's memory bank has no size: set method.pirl_bank_size, or call "
                "method.prepare_train_set(dataset, seed) before training (the Trainer does)"
            )
        if indices is None:
            raise DataError(
                "PIRL needs each image's row in the memory bank: call training_step(images, labels, generator, "
                "indices) with the samples' positions in the training set (the Trainer passes them)"
            )
        if indices.shape != (batch,):
            raise DataError(f"indices must be ({batch},), got {tuple(indices.shape)}")
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= self.memory.size:
            raise DataError(
                f"indices must lie in [0, {self.memory.size - 1}] (memory bank rows), got [{lo}, {hi}]"
            )
        return indices.to(self.memory.bank.device, torch.long)

    @torch.no_grad()
    def _log_mean_exp(self, q: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        """``log mean exp(s/τ)`` over ``q``'s scores against its own rows and the negatives, averaged over
        ranks (the log of the mean of per-rank means), so every rank gets the same value."""
        q = q.float()
        pos = (q * positives.float()).sum(1, keepdim=True)
        logits = torch.cat([pos, q @ negatives.float().T], dim=1) / self.temperature
        local = (torch.logsumexp(logits.flatten(), 0) - math.log(logits.numel())).reshape(1)
        ranks = concat_all_gather(local)
        return torch.logsumexp(ranks, 0) - math.log(ranks.numel())

    @torch.no_grad()
    def _log_noise(self, q: Tensor, positives: Tensor, negatives: Tensor, n: int, first_term: bool) -> Tensor:
        """``c = log Z + log(N / |D|)`` for the term whose query is ``q``, with ``Z = |D| · mean exp(s/τ)`` over
        its scores against its own row and the negatives, so ``c = log mean exp(s/τ) + log N``:

        * ``estimate`` (Wu et al., VISSL): Z is computed once, at the first step, from the first term's query
          (the jigsaw embedding) and used for both terms from then on;
        * ``running`` [ours]: each term's Z is computed again at every step from its own query's scores;
        * ``none``: Z = 1, ``c = log(N / |D|)``.
        """
        size = self.memory.size  # type: ignore[union-attr]
        norm = self.cfg.pirl_normalizer
        if norm == "none":
            return torch.tensor(math.log(n / size), device=q.device)
        if norm == "running":
            log_z = self._log_mean_exp(q, positives, negatives) + math.log(size)
            if first_term:
                self.log_z.copy_(log_z.reshape(()))
            return log_z + math.log(n / size)
        if torch.isnan(self.log_z):
            self.log_z.copy_((self._log_mean_exp(q, positives, negatives) + math.log(size)).reshape(()))
        return self.log_z.to(q.device) + math.log(n / size)

    def _term(
        self, q: Tensor, positives: Tensor, negatives: Tensor, c: Tensor | None, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One term of the loss for query ``q``, with ``h_pos`` (NCE: mean h(m_I, q); cross-entropy: mean softmax
        probability of the positive) and ``acc`` (fraction whose own row outscores every negative)."""
        if c is None:
            loss = pirl_info_nce(q, positives, negatives, self.temperature, mask)
        else:
            loss = pirl_nce(q, positives, negatives, self.temperature, c, mask)
        with torch.no_grad():
            pos = (q.float() * positives.float()).sum(1) / self.temperature
            neg = (q.float() @ negatives.float().T / self.temperature).masked_fill(~mask, float("-inf"))
            if c is None:
                h = torch.exp(pos - torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1)).mean()
            else:
                h = torch.sigmoid(pos - c).mean()
            acc = (pos > neg.max(dim=1).values).float().mean()
        return loss, h, acc

    def training_step(
        self,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
        indices: Tensor | None = None,
    ) -> StepOutput:
        rows = self._check_indices(indices, images.shape[0])
        bank = self.memory
        assert bank is not None
        (x,) = self.make_views(images, generator, 1)
        with torch.autocast(images.device.type, enabled=False):
            patches, _ = jigsaw_views(
                images,
                self.cfg.pirl_patch_size,
                generator,
                self.jigsaw_view_config,
                GRID,
                self.cfg.pirl_patch_fraction,
            )
        f = self.embed_image(x)
        g = self.embed_jigsaw(patches)
        n = self.cfg.pirl_negatives
        neg_idx = bank.sample(n, generator).to(bank.bank.device)
        negatives = bank.bank[neg_idx]  # indexing copies: the update below cannot change them
        positives = bank.bank[rows]
        mask = neg_idx[None, :] != rows[:, None]
        nce = self.cfg.pirl_loss == "nce"
        running = nce and self.cfg.pirl_normalizer == "running"  # the image term gets its own Z
        c_jig = self._log_noise(g, positives, negatives, n, first_term=True) if nce else None
        c_img = self._log_noise(f, positives, negatives, n, first_term=False) if running else c_jig
        loss_jig, h_jig, acc_jig = self._term(g, positives, negatives, c_jig, mask)
        loss_img, h_img, acc_img = self._term(f, positives, negatives, c_img, mask)
        lam = self.cfg.pirl_lambda
        loss = lam * loss_jig + (1 - lam) * loss_img
        bank.update(concat_all_gather(rows), concat_all_gather(f))
        with torch.no_grad():
            values = (
                torch.stack(
                    [loss.detach(), loss_jig.detach(), loss_img.detach(), h_jig, h_img, acc_jig, acc_img]
                )
                .float()
                .tolist()
            )
        keys = ("loss", "loss_jigsaw", "loss_image", "h_pos_jigsaw", "h_pos_image", "acc_jigsaw", "acc_image")
        out = dict(zip(keys, values, strict=True))
        out["log_z"] = float(self.log_z) if nce and self.cfg.pirl_normalizer != "none" else 0.0
        if running:
            out["log_z_image"] = float(c_img) + math.log(bank.size / n)
        return StepOutput(loss, out)
