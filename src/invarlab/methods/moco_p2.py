"""P2's additions to MoCo (Van Gansbeke et al. 2021, PAPERS.md §2.2): multi-crop with constrained crops,
AutoAugment and nearest-neighbour positives. :class:`invarlab.methods.moco.MoCo` calls :func:`p2_step` when any
of ``multicrop_n``, ``autoaugment_p`` or ``nn_topk`` is set; otherwise its two-crop step is unchanged.

One step, for a batch of B images:

1. crops (:func:`invarlab.views.multicrop.multicrop_views`): ``n_large = 2`` large crops and ``multicrop_n`` small
   ones; crop 1 is the key, the V other crops are queries (V = 1 + multicrop_n);
2. the query crops of each side are concatenated and go through the backbone **once per side** (DINO's
   multi-crop wrapper), then all features through the head once: ``q_{b,v}``, and backbone features ``h_{b,v}``;
3. the key ``k_b`` from the momentum encoder (shuffle-BN as in MoCo), with its backbone feature ``h^k_b``;
4. ``L_MoCo`` = the mean over the V query crops of MoCo's loss against the one key and the queue U;
5. with ``nn_topk > 0``: neighbours of ``h_{b,v}`` among the backbone queue, ``L_NN`` on the head queue at the
   same indices (:func:`invarlab.losses.nn_pull`), **before** this step's keys are enqueued (PAPERS.md §2.2.4:
   the consistent order of ``builder_ours_warmup.py``); ``L = L_MoCo + w L_NN`` after the warm-up;
6. ``k`` (and ``h^k``) of every rank gathered and enqueued into both queues, so row i of each is the same key.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.distributed import concat_all_gather
from invarlab.errors import ConfigError
from invarlab.losses import nn_neighbours, nn_pull
from invarlab.methods.base import MethodConfig, StepOutput
from invarlab.views.multicrop import MultiCropConfig, multicrop_views

if TYPE_CHECKING:
    from invarlab.methods.moco import MoCo

__all__ = ["multicrop_config", "p2_enabled", "p2_step"]


def p2_enabled(cfg: MethodConfig) -> bool:
    """Whether any P2 option is on (then MoCo takes :func:`p2_step`; ``constrained`` alone is an error that
    :func:`multicrop_config` reports)."""
    return cfg.multicrop_n > 0 or cfg.autoaugment_p > 0 or cfg.nn_topk > 0 or cfg.constrained


def multicrop_config(cfg: MethodConfig, view_config) -> MultiCropConfig:  # type: ignore[no-untyped-def]
    """The crop recipe of a MoCo config: 2 large crops of ``view_size`` (the method's view recipe, its
    ``scale`` for the large crops), ``multicrop_n`` small ones, crop 1 the key. Checks option combinations."""
    if cfg.symmetric:
        raise ConfigError(
            "method.symmetric cannot be combined with multicrop_n, autoaugment_p or nn_topk (P2 has one key "
            "crop that never takes AutoAugment); set method.symmetric=false"
        )
    if cfg.constrained and cfg.multicrop_n == 0:
        raise ConfigError(
            "method.constrained=true constrains small crops: also set method.multicrop_n (P2: 4)"
        )
    small = cfg.multicrop_size or max(1, round(0.6 * cfg.view_size))
    return MultiCropConfig(
        n_large=2,
        n_small=cfg.multicrop_n,
        large_size=cfg.view_size,
        small_size=small,
        small_scale=(float(cfg.multicrop_scale[0]), float(cfg.multicrop_scale[1])),
        key_index=1,
        constrained=cfg.constrained,
        min_overlap=cfg.multicrop_min_overlap,
        autoaugment_p=cfg.autoaugment_p,
        view=view_config,
    ).validate()


def _nn_active(method: MoCo) -> bool:
    """False during the warm-up: the first ``ceil(nn_warmup · total_steps)`` steps. Before the trainer has
    reported a step the total is unknown (0); a positive warm-up then counts the step as warm-up, as
    ``ceil(f T) >= 1`` for any ``f > 0``."""
    f = method.cfg.nn_warmup
    if f <= 0:
        return True
    done, total = int(method.nn_steps[0]), int(method.nn_steps[1])
    return total > 0 and done >= math.ceil(f * total)


def p2_step(method: MoCo, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
    """One training step of MoCo with P2's options (see the module docstring)."""
    from invarlab.methods.moco import moco_loss  # here: moco.py imports this module

    cfg = method.cfg
    with torch.autocast(images.device.type, enabled=False):  # float32 views under any autocast
        views = multicrop_views(images, method.multicrop, generator)
    # One backbone forward per crop side, then one head forward: rows are crop-major, B per query crop.
    h = torch.cat(
        [method.backbone(torch.cat([views.crops[i] for i in idx])) for _, idx in views.queries_by_size()]
    )
    q = F.normalize(method.head(h), dim=1)
    k, h_key = method.encode_key(views.key, generator, with_features=True)
    n_queries = len(views.query_indices)
    negatives = method.queue.features.clone()  # enqueue() below writes in place
    # The mean over the V B rows is the mean over the V crops of each crop's MoCo loss against the one key.
    loss_moco, logits = moco_loss(q, k.repeat(n_queries, 1), negatives, method.temperature)
    loss = loss_moco
    extra: dict[str, Tensor] = {"loss_moco": loss_moco.detach()}
    if cfg.nn_topk > 0:
        bank = method.queue_backbone.features  # both queues as they are before this step's enqueue
        active = _nn_active(method)
        neighbours = nn_neighbours(F.normalize(h.detach().float(), dim=1), bank, cfg.nn_topk)
        with torch.set_grad_enabled(active and torch.is_grad_enabled()):  # logged also during the warm-up
            loss_nn = nn_pull(q, negatives, neighbours, method.temperature)
        if active:
            loss = loss + cfg.nn_weight * loss_nn
        extra["loss_nn"] = loss_nn.detach()
        extra["nn_active"] = torch.tensor(float(active))
        if labels is not None and neighbours.shape[1] > 0:
            agree, known = _label_agreement(labels.repeat(n_queries), method.queue.feature_labels, neighbours)
            extra["nn_label_agree"], extra["_known"] = agree, known
    if views.constrained.numel():
        extra["crop_fallback"] = 1.0 - views.constrained.float().mean()
    gathered_labels = concat_all_gather(labels.to(k.device)) if labels is not None else None
    method.queue.enqueue(concat_all_gather(k), gathered_labels)
    if cfg.nn_topk > 0:
        method.queue_backbone.enqueue(concat_all_gather(h_key))
    metrics = method._metrics(loss, logits)
    # One transfer for the extra metrics too (a host synchronisation each would stall an accelerator).
    values = dict(zip(extra, torch.stack([v.float().cpu() for v in extra.values()]).tolist(), strict=True))
    if not values.pop("_known", 1.0):
        values.pop("nn_label_agree")  # no query of the batch has a label
    metrics.update(values)
    return StepOutput(loss, metrics)


@torch.no_grad()
def _label_agreement(query_labels: Tensor, queue_labels: Tensor, neighbours: Tensor) -> tuple[Tensor, Tensor]:
    """Fraction of neighbours whose stored label equals their query's, over the queries with a known label
    (``>= 0``), and the number of such queries; neighbours with an unknown label (−1, e.g. random initial
    rows) count as disagreeing."""
    query_labels = query_labels.to(neighbours.device)
    known = (query_labels >= 0).float()
    same = (queue_labels.to(neighbours.device)[neighbours] == query_labels[:, None]).float().mean(dim=1)
    return (same * known).sum() / known.sum().clamp(min=1.0), known.sum()
