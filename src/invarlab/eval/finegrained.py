"""Fine-grained classification on frozen features (PAPERS.md §3.8, Table 2 of §3.9): the paper's CUB-200 linear
probe and Flowers-102 5- / 10-shot, and the world's counterpart, the instance within a category.

Data (``ctx.cfg.finegrained``):

* ``world``: a world dataset with several images per instance (``world_dataset``, e.g. the quickstart world's
  ``finegrained``: two categories, every instance ~20 times under random viewpoint, light and background);
  class = (category, instance); a stratified ``test_fraction`` of every class's images is held out
  (:func:`invarlab.eval.linear.stratified_split`). Colour, texture and proportions are all that tell two
  instances of a category apart, so a colour-invariant representation is expected to do worse.
* ``cub``: CUB-200-2011's official train / test split (:func:`invarlab.data.finegrained.cub200`);
* ``flowers``: Flowers-102, ``train`` or ``train+val`` (``flowers_support``) against ``test``.

For every dataset (:func:`finegrained_scores`): the linear probe of :mod:`invarlab.eval.linear` trained on the
train split, weighted kNN (``knn.k``, ``knn.temperature``), and for each ``shots`` value ``k`` an all-way
``k``-shot episode set (:func:`invarlab.eval.fewshot.few_shot`: support drawn from train, every test image of
the classes as queries, Adam 0.03 for 250 iterations, ``trials`` trials, mean ± 95% CI).
Results: ``finegrained`` (world) or ``finegrained_<dataset>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invarlab.errors import ConfigError, DataError

__all__ = ["finegrained", "finegrained_meta", "finegrained_scores", "result_key", "world_instance_labels"]

log = logging.getLogger(__name__)

RESIZE_RATIO = 256 / 224  # shorter side before the centre crop, as ImageNet evaluations resize 256 -> 224


def finegrained_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    shots: Sequence[int] = (5, 10),
    trials: int = 10,
    seed: int = 0,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
) -> dict[str, Any]:
    """``{"linear": {top1, top5, weight_decay}, "knn": {top1, top5}, "fewshot": {"allway_<k>shot": {mean, ci95,
    ...}}, "classes", "n_train", "n_test"}`` (module docstring). A shot count that leaves fewer than two classes
    with enough support images is skipped with a warning."""
    from invarlab.eval.fewshot import few_shot
    from invarlab.eval.knn import knn_accuracy
    from invarlab.eval.linear import linear_probe

    classes = int(max(train_labels.max(), test_labels.max())) + 1
    lin = linear_probe(train_feats, train_labels, test_feats, test_labels, seed=seed, num_classes=classes)
    out: dict[str, Any] = {
        "linear": {k: lin[k] for k in ("top1", "top5", "weight_decay")},
        "knn": knn_accuracy(
            train_feats, train_labels, test_feats, test_labels, knn_k, knn_temperature, classes
        ),
        "fewshot": {},
        "classes": classes,
        "n_train": int(train_labels.shape[0]),
        "n_test": int(test_labels.shape[0]),
    }
    support = torch.bincount(train_labels.long(), minlength=classes)
    queries = torch.bincount(test_labels.long(), minlength=classes)
    for k in shots:
        if int(((support >= k) & (queries >= 1)).sum()) < 2:
            log.warning("fine-grained %d-shot: fewer than two classes have %d training images, skipped", k, k)
            continue
        out["fewshot"][f"allway_{k}shot"] = few_shot(
            train_feats,
            train_labels,
            "all",
            k,
            None,
            trials,
            seed,
            query_features=test_feats,
            query_labels=test_labels,
        )
    return out


def world_instance_labels(meta: dict[str, np.ndarray]) -> Tensor:
    """Class ``0..C−1`` of every image: its object's (category, instance), numbered in sorted order."""
    category = torch.as_tensor(np.asarray(meta["category_0"], dtype=np.int64))
    instance = torch.as_tensor(np.asarray(meta["instance_0"], dtype=np.int64))
    key = category * (int(instance.max()) + 1) + instance
    return torch.unique(key, return_inverse=True)[1]


def result_key(ctx: Any) -> str:
    """``finegrained`` on the world, ``finegrained_<dataset>`` on CUB / Flowers."""
    dataset = ctx.cfg.finegrained.dataset
    return "finegrained" if dataset == "world" else f"finegrained_{dataset}"


def _size(ctx: Any) -> int:
    return int(ctx.cfg.finegrained.size or ctx.image_size or 224)


def _real_splits(ctx: Any) -> tuple[Any, Any]:
    from invarlab.data.finegrained import cub200, flowers102

    c = ctx.cfg.finegrained
    if not c.root:
        raise DataError(
            f"--dataset {c.dataset} needs --root (finegrained.root): the folder that holds "
            f"{'CUB_200_2011' if c.dataset == 'cub' else 'Flowers-102'} (layout: docs/eval_looc.md)"
        )
    size = _size(ctx)
    resize = round(size * RESIZE_RATIO)
    if c.dataset == "cub":
        return cub200(c.root, "train", size, resize), cub200(c.root, "test", size, resize)
    return flowers102(c.root, c.flowers_support, size, resize), flowers102(c.root, "test", size, resize)


def _features(ctx: Any, rep: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    c = ctx.cfg.finegrained
    if c.dataset == "world":
        from invarlab.eval.linear import stratified_split

        feats, _ = ctx.features(rep, c.world_dataset)
        labels = world_instance_labels(ctx.dataset(c.world_dataset).meta)
        tr, te = stratified_split(labels, c.test_fraction, ctx.cfg.seed)
        return feats[tr], labels[tr], feats[te], labels[te]
    train, test = _real_splits(ctx)
    size = _size(ctx)
    xtr, ytr = ctx.dataset_features(rep, train, f"{train.name}-{size}px", "pooled", None)
    xte, yte = ctx.dataset_features(rep, test, f"{test.name}-{size}px", "pooled", None)
    return xtr, ytr, xte, yte


def finegrained(ctx: Any, rep: str) -> dict[str, Any]:
    """The evaluator: :func:`finegrained_scores` of representation ``rep`` on ``ctx.cfg.finegrained.dataset``."""
    from invarlab.eval.looc_config import FINEGRAINED_DATASETS

    c = ctx.cfg.finegrained
    if c.dataset not in FINEGRAINED_DATASETS:
        raise ConfigError(f"finegrained.dataset={c.dataset!r}: use one of {', '.join(FINEGRAINED_DATASETS)}")
    bad = [k for k in c.shots if int(k) < 1]
    if bad:
        raise ConfigError(f"finegrained.shots={list(c.shots)}: every entry must be >= 1")
    xtr, ytr, xte, yte = _features(ctx, rep)
    return finegrained_scores(
        xtr,
        ytr,
        xte,
        yte,
        tuple(int(k) for k in c.shots),
        c.trials,
        ctx.cfg.seed,
        ctx.cfg.knn.k,
        ctx.cfg.knn.temperature,
    )


def finegrained_meta(ctx: Any) -> dict[str, Any]:
    """Settings recorded under ``_meta``."""
    c = ctx.cfg.finegrained
    base: dict[str, Any] = {
        "dataset": c.dataset,
        "shots": [int(k) for k in c.shots],
        "trials": c.trials,
        "k": ctx.cfg.knn.k,
        "temperature": ctx.cfg.knn.temperature,
    }
    if c.dataset == "world":
        base.update(
            world_preset=ctx.cfg.world_preset,
            world_dataset=c.world_dataset,
            test_fraction=c.test_fraction,
            image_size=ctx.image_size,
        )
    else:
        base.update(root=str(Path(c.root).expanduser().resolve()), image_size=_size(ctx))
        if c.dataset == "flowers":
            base.update(support=c.flowers_support)
    return base
