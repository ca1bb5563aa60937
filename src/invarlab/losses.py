"""Contrastive losses as pure functions: tensors in, a scalar loss out, no state.

Notation used in every docstring: ``τ`` the temperature, ``·`` the dot product, ``B`` the batch size. Inputs
are embeddings that the caller has already L2-normalised (so ``q · k`` is a cosine similarity), except in
:func:`nt_xent`, whose definition normalises. Every loss is a mean of cross-entropies, computed through
``log_softmax`` / ``logsumexp``, which subtract the row maximum, so large ``1 / τ`` cannot overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "info_nce",
    "info_nce_extra_negatives",
    "info_nce_logits",
    "info_nce_per_positive",
    "multi_positive_info_nce",
    "nn_neighbours",
    "nn_pull",
    "nt_xent",
]


def _check_pair(query: Tensor, positive: Tensor) -> None:
    if query.ndim != 2 or query.shape != positive.shape:
        raise ValueError(
            f"query and positive must both be (B, D), got {tuple(query.shape)} and {tuple(positive.shape)}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def info_nce_logits(query: Tensor, positive: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor]:
    """The unscaled logits of :func:`info_nce` and the index of the positive in each row.

    With ``negatives`` ``(K, D)``: ``logits = [l_pos, l_neg]`` of shape ``(B, 1 + K)`` with
    ``l_pos_b = q_b · k_b`` and ``l_neg_{b,n} = q_b · u_n``; the positive is column 0 (MoCo's layout).
    With ``negatives=None``: ``logits_{b,j} = q_b · k_j`` of shape ``(B, B)``; the positive of row ``b`` is
    column ``b``. Returns ``(logits, target)``, ``target`` a ``(B,)`` long tensor.
    """
    _check_pair(query, positive)
    b = query.shape[0]
    if negatives is None:
        return query @ positive.T, torch.arange(b, device=query.device)
    if negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"negatives must be (K, {query.shape[1]}), got {tuple(negatives.shape)}")
    l_pos = (query * positive).sum(dim=1, keepdim=True)
    l_neg = query @ negatives.to(query.dtype).T
    return torch.cat([l_pos, l_neg], dim=1), torch.zeros(b, dtype=torch.long, device=query.device)


def info_nce(query: Tensor, positive: Tensor, negatives: Tensor | None, temperature: float) -> Tensor:
    r"""InfoNCE (van den Oord et al. 2018; MoCo's loss): the mean over the batch of ``−log softmax`` of the
    positive logit.

    ``query``, ``positive``: ``(B, D)``, L2-normalised, row ``b`` of one a positive pair with row ``b`` of the
    other. With a bank of negatives ``negatives = U`` ``(K, D)`` (MoCo's queue):

        L = −(1/B) Σ_b log [ exp(q_b·k_b/τ) / ( exp(q_b·k_b/τ) + Σ_{n=1..K} exp(q_b·u_n/τ) ) ]

    which equals ``F.cross_entropy([l_pos, l_neg] / τ, 0)`` as MoCo computes it. With ``negatives=None`` the
    negatives of query ``b`` are the **other samples' positives** ``k_j, j ≠ b`` (B − 1 of them):

        L = −(1/B) Σ_b log [ exp(q_b·k_b/τ) / Σ_{j=1..B} exp(q_b·k_j/τ) ]

    This in-batch form is one-directional. Its symmetrisation ``(info_nce(z1, z2, None, τ) + info_nce(z2, z1,
    None, τ)) / 2`` is CLIP's / MoCo v3's loss, with B − 1 negatives per anchor; it is **not** SimCLR's NT-Xent,
    which also contrasts each anchor with the other samples of its own view (2B − 2 negatives over the 2B
    anchors): use :func:`nt_xent` for that.
    """
    _check_temperature(temperature)
    logits, target = info_nce_logits(query, positive, negatives)
    return F.cross_entropy(logits / temperature, target)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    r"""SimCLR's NT-Xent (Chen et al. 2020, eq. 1) over the ``2N`` embeddings of two views.

    ``z1``, ``z2``: ``(N, D)``, two views of the same N images (normalised here: the definition uses cosine
    similarity ``sim(u, v) = u·v / (‖u‖‖v‖)``). With ``z = [z1; z2]`` and ``p(i)`` the other view of sample i
    (``i ± N``):

        ℓ_i = −log [ exp(sim(z_i, z_p(i))/τ) / Σ_{j ≠ i} exp(sim(z_i, z_j)/τ) ]
        L = (1/2N) Σ_{i=1..2N} ℓ_i

    so each anchor has one positive and 2N − 2 negatives (every other embedding of either view).
    """
    _check_pair(z1, z2)
    _check_temperature(temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.T / temperature
    # -inf on the diagonal removes j = i from the denominator (exp(-inf) = 0) without changing the shape.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    target = torch.cat([idx + n, idx])
    return F.cross_entropy(sim, target)


def multi_positive_info_nce(
    query: Tensor,
    keys: Tensor,
    positive_mask: Tensor,
    temperature: float,
    logits_mask: Tensor | None = None,
) -> Tensor:
    r"""InfoNCE with several positives per query: the mean log-probability of the positives (SupCon's
    ``L_out``, Khosla et al. 2020; P2's nearest-neighbour loss, PAPERS.md §2.2.4; LooC's multi-positive spaces).

    ``query`` ``(B, D)`` and ``keys`` ``(K, D)`` L2-normalised; ``positive_mask`` ``(B, K)`` bool, true where
    key ``n`` is a positive of query ``b`` (the set ``P(b)``); ``logits_mask`` ``(B, K)`` bool, optional, false
    where key ``n`` is left out of query ``b``'s softmax altogether (e.g. the anchor itself in SupCon):

        log p_{b,n} = q_b·u_n/τ − log Σ_{m : logits_mask_{b,m}} exp(q_b·u_m/τ)
        ℓ_b = −(1/|P(b)|) Σ_{n ∈ P(b)} log p_{b,n}
        L = mean of ℓ_b over the queries with |P(b)| > 0

    The denominator contains every kept key, positives included. Queries without a positive do not count; if
    no query has one, the loss is a zero that still depends on ``query`` (so ``backward`` works).
    """
    _check_temperature(temperature)
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(
            f"query (B, D) and keys (K, D) expected, got {tuple(query.shape)}, {tuple(keys.shape)}"
        )
    expected = (query.shape[0], keys.shape[0])
    if tuple(positive_mask.shape) != expected:
        raise ValueError(f"positive_mask must be {expected}, got {tuple(positive_mask.shape)}")
    logits = query @ keys.to(query.dtype).T / temperature
    positive = positive_mask.bool()
    if logits_mask is not None:
        if tuple(logits_mask.shape) != expected:
            raise ValueError(f"logits_mask must be {expected}, got {tuple(logits_mask.shape)}")
        logits = logits.masked_fill(~logits_mask.bool(), float("-inf"))
        positive = positive & logits_mask.bool()  # a dropped key cannot be a positive
    # At least float32: under bf16 autocast the log-probabilities of a 65k-entry queue would lose the signal.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    count = positive.sum(dim=1)
    # where() rather than multiply: masked entries may be -inf, and -inf * 0 is nan.
    pos_sum = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    # Weighted mean instead of boolean indexing: no host sync, and a zero (with a graph) when nothing counts.
    has = (count > 0).to(log_prob.dtype)
    per_query = pos_sum / count.clamp(min=1)
    return -(per_query * has).sum() / has.sum().clamp(min=1.0)


def _check_bank(query: Tensor, negatives: Tensor) -> None:
    if negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"negatives must be (K, {query.shape[1]}), got {tuple(negatives.shape)}")


def info_nce_per_positive(query: Tensor, positives: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    r"""InfoNCE averaged over several positives, **each in its own softmax** against a shared bank (LooC's
    all-invariant space, PAPERS.md §3.4; unlike :func:`multi_positive_info_nce`, the other positives are not in
    the denominator).

    ``query`` ``(B, D)``; ``positives`` ``(B, P, D)``, row ``b`` the positives of query ``b``; ``negatives``
    ``U`` ``(K, D)`` (``K`` may be 0); all L2-normalised:

        L = −(1/(B P)) Σ_b Σ_p log [ exp(q_b·k_{b,p}/τ) / ( exp(q_b·k_{b,p}/τ) + Σ_{n=1..K} exp(q_b·u_n/τ) ) ]

    i.e. the mean over ``p`` of ``info_nce(query, positives[:, p], negatives, τ)``. With ``K = 0`` every term
    is ``log 1 = 0``.
    """
    _check_temperature(temperature)
    if query.ndim != 2 or positives.ndim != 3 or positives.shape[0] != query.shape[0]:
        raise ValueError(
            f"query (B, D) and positives (B, P, D) expected, got {tuple(query.shape)}, {tuple(positives.shape)}"
        )
    if positives.shape[2] != query.shape[1]:
        raise ValueError(f"positives must have dimension {query.shape[1]}, got {positives.shape[2]}")
    _check_bank(query, negatives)
    l_pos = torch.einsum("bd,bpd->bp", query, positives.to(query.dtype)) / temperature  # (B, P)
    # The bank's log-sum-exp is shared by all P softmaxes of a query: one (B, K) product, not (B, P, K).
    lse_neg = torch.logsumexp(query @ negatives.to(query.dtype).T / temperature, dim=1, keepdim=True)
    return -(l_pos - torch.logaddexp(l_pos, lse_neg)).mean()


def info_nce_extra_negatives(
    query: Tensor, positive: Tensor, extra_negatives: Tensor, negatives: Tensor, temperature: float
) -> Tensor:
    r"""InfoNCE with per-query negatives besides a shared bank (LooC's leave-one-out spaces: the other views of
    the same image are negatives, PAPERS.md §3.4).

    ``query``, ``positive`` ``(B, D)``; ``extra_negatives`` ``W`` ``(B, E, D)``, row ``b`` the negatives of
    query ``b`` only (``E`` may be 0); ``negatives`` ``U`` ``(K, D)`` shared by all queries (``K`` may be 0); all
    L2-normalised:

        L = −(1/B) Σ_b log [ exp(q_b·k_b/τ) / ( exp(q_b·k_b/τ) + Σ_{e=1..E} exp(q_b·w_{b,e}/τ)
                                                  + Σ_{n=1..K} exp(q_b·u_n/τ) ) ]

    computed as ``cross_entropy([l_pos, l_extra, l_neg] / τ, 0)``.
    """
    _check_temperature(temperature)
    _check_pair(query, positive)
    if extra_negatives.ndim != 3 or extra_negatives.shape[0] != query.shape[0]:
        raise ValueError(f"extra_negatives must be (B, E, D), got {tuple(extra_negatives.shape)}")
    if extra_negatives.shape[2] != query.shape[1]:
        raise ValueError(
            f"extra_negatives must have dimension {query.shape[1]}, got {extra_negatives.shape[2]}"
        )
    _check_bank(query, negatives)
    l_pos = (query * positive.to(query.dtype)).sum(dim=1, keepdim=True)
    l_extra = torch.einsum("bd,bed->be", query, extra_negatives.to(query.dtype))
    l_neg = query @ negatives.to(query.dtype).T
    logits = torch.cat([l_pos, l_extra, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


def nn_neighbours(features: Tensor, bank: Tensor, k: int) -> Tensor:
    """Indices ``(N, k)`` of the ``k`` rows of ``bank`` ``(K, d)`` most similar to each row of ``features``
    ``(N, d)``, most similar first: ``TopK_n(h_i · v_n)`` (both L2-normalised, so a cosine; P2's neighbours in
    backbone space, PAPERS.md §2.2.4). ``k`` is capped at ``K``; ``k = 0`` gives ``(N, 0)``."""
    k = min(int(k), bank.shape[0])
    if k <= 0:
        return torch.zeros(features.shape[0], 0, dtype=torch.long, device=features.device)
    with torch.autocast(features.device.type, enabled=False):
        sim = features.float() @ bank.float().T
    return sim.topk(k, dim=1).indices


def nn_pull(query: Tensor, queue: Tensor, neighbours: Tensor, temperature: float) -> Tensor:
    r"""P2's nearest-neighbour loss (PAPERS.md §2.2.4): the mean log-probability, in a softmax over the queue
    only, of each query's neighbours (SupCon-style, found elsewhere, e.g. by :func:`nn_neighbours` in backbone
    space).

    ``query`` ``(N, D)`` and ``queue`` ``U`` ``(K, D)`` L2-normalised (head space); ``neighbours`` ``(N, k)``
    indices into U, the set ``N_i`` of query ``i``:

        log p_{i,n} = q_i·u_n/τ − log Σ_{m=1..K} exp(q_i·u_m/τ)
        L_NN = −(1/N) Σ_i (1/k) Σ_{n ∈ N_i} log p_{i,n}

    The denominator holds the queue entries only (no positive key). With the multi-crop rows ``i = (b, v)``,
    ``N = B V``, this is the paper's ``−1/(BV) Σ_{b,v} 1/|N_{b,v}| Σ_n log p``. Logits are float32 also under
    autocast; ``k = 0`` gives a zero that still depends on ``query``.
    """
    _check_temperature(temperature)
    if query.ndim != 2 or queue.ndim != 2 or query.shape[1] != queue.shape[1]:
        raise ValueError(
            f"query (N, D) and queue (K, D) expected, got {tuple(query.shape)}, {tuple(queue.shape)}"
        )
    if neighbours.ndim != 2 or neighbours.shape[0] != query.shape[0]:
        raise ValueError(f"neighbours must be ({query.shape[0]}, k), got {tuple(neighbours.shape)}")
    if neighbours.shape[1] == 0 or queue.shape[0] == 0:
        return query.sum() * 0.0
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        logits = query.to(dtype) @ queue.to(dtype).T / temperature
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        return -log_prob.gather(1, neighbours.to(log_prob.device)).mean()
