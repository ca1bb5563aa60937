"""The world evaluation suite: each function evaluates one representation of a run and returns the numbers
that :func:`run_evaluations` records in ``results.json`` (section = the evaluation's name).

* ``knn`` / ``linear`` / ``fewshot``: category of unseen instances (``classify_test``) from a bank of seen
  ones (``classify_train``), or with ``classify.dataset`` the classes of a dataset read from disk (a folder,
  ImageNet, CIFAR, STL-10; results under ``<evaluation>_<dataset>``); ``linear_sgd`` (only when listed): the
  standard linear protocol on the same images (:mod:`invarlab.eval.linear_sgd`);
* ``invariance``: RIS Top-10 / Top-25 (PAPERS.md §1.3) on each invariance-set dataset, named by its kind;
* ``factor_probes``: linear decoding of each world factor from the features (instance-grouped splits);
* ``corruptions``: kNN accuracy on corrupted test images, 5 severities per corruption;
* ``svm``: VOC07-style multi-label linear SVMs on scene images (categories present), or on real VOC2007
  (``svm.dataset=voc``: ``svm_voc``);
* ``retrieval``: precision of the nearest neighbours and the query / neighbours grid (``figures/retrieval.png``);
* ``segment_retrieval`` / ``label_propagation`` / ``seg_probe``: dense features without finetuning, on the
  world or on VOC / DAVIS (:mod:`invarlab.eval.dense_suite`; run only when listed);
* ``sensitivity`` / ``finegrained``: P3's rotation / colour / texture probes and fine-grained classification
  (:mod:`invarlab.eval.sensitivity`, :mod:`invarlab.eval.finegrained`; run only when listed).

Representations are ``ctx.representations``: ``model`` and ``random``, and for a LooC run its spaces and LooC++
(:mod:`invarlab.eval.spaces`; not for the dense evaluations, which need feature maps).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from invarlab.errors import ConfigError
from invarlab.eval.classify_config import CLASSIFY_EVALUATIONS, classify_key
from invarlab.eval.config import DENSE_EVALUATIONS, EVALUATIONS, OPTIONAL_EVALUATIONS, PROBE_FACTORS
from invarlab.eval.context import EvalContext
from invarlab.eval.dense_suite import DENSE_EVALUATORS, dense_meta, result_key
from invarlab.eval.finegrained import finegrained, finegrained_meta
from invarlab.eval.finegrained import result_key as finegrained_key
from invarlab.eval.looc_config import LOOC_EVALUATIONS
from invarlab.eval.sensitivity import sensitivity
from invarlab.eval.spaces import is_space
from invarlab.results import record_result

__all__ = ["EVALUATORS", "run_evaluations"]

log = logging.getLogger(__name__)

# Objects less visible than this in a scene count as "difficult" for the SVM (VOC: neither positive nor used).
DIFFICULT_VISIBILITY = 0.25


def knn(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.knn import knn_accuracy

    (xtr, ytr), (xte, yte) = _classification(ctx, rep)
    return knn_accuracy(xtr, ytr, xte, yte, ctx.cfg.knn.k, ctx.cfg.knn.temperature)


def linear(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.linear import linear_probe

    (xtr, ytr), (xte, yte) = _classification(ctx, rep)
    return linear_probe(xtr.float(), ytr, xte.float(), yte, seed=ctx.cfg.seed)


def linear_sgd(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.linear_sgd import train_linear_sgd

    train, test = ctx.classification_sets()
    return train_linear_sgd(
        ctx.encoder(rep).backbone,
        train,
        test,
        max(train.num_classes, int(test.labels.max()) + 1),
        ctx.cfg.linear_sgd,
        image_size=ctx.classify_size,
        device=ctx.device,
        seed=ctx.cfg.seed,
        workers=ctx.cfg.workers,
    )


def fewshot(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.fewshot import few_shot_suite

    c = ctx.cfg.fewshot
    _, (xte, yte) = _classification(ctx, rep)  # episodes of unseen instances
    return few_shot_suite(
        xte.float(),
        yte,
        ways=(c.ways, "all"),
        shots=tuple(c.shots),
        queries=c.queries,
        trials=c.trials,
        seed=ctx.cfg.seed,
    )


def invariance(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.invariance import ris

    out = {}
    for name in ctx.cfg.invariance_sets:
        feats, _ = ctx.features(rep, name)
        meta = ctx.dataset(name).meta
        scores = ris(feats, torch.as_tensor(meta["set_id"]), torch.as_tensor(meta["class_id"]))
        out[ctx.kind(name)] = {f"top{k}": v for k, v in scores.items()}
    return out


def probe_factors(meta: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Discrete values of every probed factor (PROBE_FACTORS) from a world dataset's metadata.

    azimuth: 8 bins of 45°; elevation: 3 equal bins over the camera's range; light_direction: 8 x 6 bins of
    45° x 30°; light_color: 3 tertiles of the colour temperature; occlusion: none / < 1/3 / < 2/3 / more
    covered; instance: the instance within its category (fine-grained); category."""
    from invarlab.eval.invariance import azimuth_bins, light_direction_bins

    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in meta.items() if _numeric(v)}
    elevation = t["elevation"]
    edges = torch.linspace(float(elevation.min()), float(elevation.max()), 4)[1:-1]
    kelvin = t["light_temperature"]
    tertiles = torch.quantile(kelvin, torch.tensor([1 / 3, 2 / 3], dtype=kelvin.dtype))
    cover = t["occluder_coverage"]
    category = t["category_0"].long()
    instance = t["instance_0"].long()
    return {
        "azimuth": azimuth_bins(t["azimuth"]),
        "elevation": torch.bucketize(elevation, edges),
        "light_direction": light_direction_bins(t["light_azimuth"], t["light_elevation"]),
        "light_color": torch.bucketize(kelvin, tertiles),
        "occlusion": torch.where(
            cover > 0, 1 + torch.bucketize(cover, torch.tensor([1 / 3, 2 / 3]).double()), 0
        ),
        "instance": category * (int(instance.max()) + 1) + instance,
        "category": category,
    }


def factor_probes(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.invariance import factor_probe

    feats, _ = ctx.features(rep, ctx.cfg.probes)
    meta = ctx.dataset(ctx.cfg.probes).meta
    factors = probe_factors(meta)
    object_id = factors["instance"]
    out = {}
    for name in PROBE_FACTORS:
        values = factors[name]
        if len(torch.unique(values)) < 2:
            log.warning("factor probe '%s': a single value in '%s', skipped", name, ctx.cfg.probes)
            continue
        # Instances go whole to one side so a probe cannot answer by recognising an object it saw, except
        # for the instance probe itself (its classes are the instances) and the category probe (whose
        # generalisation across instances is what kNN / linear measure already).
        groups = None if name in ("instance", "category") else object_id
        out[name] = factor_probe(feats, values, groups=groups, seed=ctx.cfg.seed)
    return out


def corruptions(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.corruptions import DEFAULT_CORRUPTIONS, corruption_robustness
    from invarlab.eval.knn import knn_classify

    c = ctx.cfg.corruptions
    (xtr, ytr), _ = _classification(ctx, rep)
    _, test = ctx.classification_sets()
    n = len(test)
    keep = (
        torch.randperm(n, generator=torch.Generator().manual_seed(ctx.cfg.seed))[: c.max_images].sort().values
    )
    images = torch.stack([test[int(i)][0] for i in keep])
    labels = test.labels[keep]
    num_classes = max(test.num_classes, int(ytr.max()) + 1)
    k, temperature = ctx.cfg.knn.k, ctx.cfg.knn.temperature
    return corruption_robustness(
        ctx.featurize(rep),
        lambda f: knn_classify(xtr, ytr, f, k, temperature, num_classes=num_classes),
        images,
        labels,
        names=tuple(c.names) or DEFAULT_CORRUPTIONS,
        severities=tuple(c.severities),
        batch_size=ctx.cfg.batch_size,
        seed=ctx.cfg.seed,
    )


def scene_labels(meta: dict[str, np.ndarray], visible: np.ndarray, num_classes: int) -> np.ndarray:
    """VOC-style ``(N, C)`` labels of scenes from the object slots' categories (``category_<slot>``, -1 when
    empty) and visible fractions ``(N, slots)``: 1 where a category has an object at least
    ``DIFFICULT_VISIBILITY`` visible, 0 ("difficult") where its objects are all less visible, -1 where absent."""
    n = visible.shape[0]
    labels = -np.ones((n, num_classes), dtype=np.int64)
    for slot in range(visible.shape[1]):
        if f"category_{slot}" not in meta:
            break
        cat = np.asarray(meta[f"category_{slot}"], dtype=np.int64)
        present = cat >= 0
        rows, cols = np.nonzero(present)[0], cat[present]
        level = np.where(visible[present, slot] >= DIFFICULT_VISIBILITY, 1, 0)
        np.maximum.at(labels, (rows, cols), level)
    return labels


def svm(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.svm import voc07_svm

    if ctx.cfg.svm.dataset == "voc":
        return _voc_svm(ctx, rep)
    if ctx.cfg.svm.dataset != "world":
        raise ConfigError(f"svm.dataset={ctx.cfg.svm.dataset!r}: use world or voc")
    name = ctx.cfg.multilabel
    feats, _ = ctx.features(rep, name)
    ds = ctx.dataset(name)
    from invarlab.world.catalog import CATEGORY_NAMES

    visible = np.asarray(ds.rendered.visible_fraction)[ds.indices]
    labels = scene_labels(ds.meta, visible, len(CATEGORY_NAMES))
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(ctx.cfg.seed)).numpy()
    half = len(order) // 2
    tr, te = order[:half], order[half:]
    return voc07_svm(feats[tr], labels[tr], feats[te], labels[te], class_names=list(CATEGORY_NAMES))


def _voc_svm(ctx: EvalContext, rep: str) -> dict[str, Any]:
    """P2's protocol (PAPERS.md §2.4.1) on real VOC2007: SVMs trained on ``trainval`` features, mAP on ``test``;
    images shorter side 256/224 of the crop, centre crop."""
    from invarlab.data.voc import VOC_CLASSES
    from invarlab.eval.svm import voc07_svm

    trainval, test = ctx.voc_classification()
    feats = {}
    for split in (trainval, test):
        name = f"voc2007-{split.split}-{split.identity}"
        feats[split.split], _ = ctx.dataset_features(rep, split, name, "pooled", split.image_size)
    return voc07_svm(
        feats["trainval"], trainval.targets, feats["test"], test.targets, class_names=list(VOC_CLASSES)
    )


def retrieval(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.neighbours import nearest_neighbours, retrieval_grid

    (xtr, ytr), (xte, yte) = _classification(ctx, rep)
    k = ctx.cfg.retrieval_neighbours
    idx, _ = nearest_neighbours(xtr.float(), xte.float(), k)
    hits = (ytr[idx] == yte[:, None]).double()
    out = {f"precision_at_{k}": float(hits.mean() * 100), "precision_at_1": float(hits[:, 0].mean() * 100)}
    if rep == "model":
        train, test = ctx.classification_sets()
        queries = _spread(yte, ctx.cfg.retrieval_queries, ctx.cfg.seed)
        name = classify_key("retrieval", ctx.cfg.classify.dataset)
        path = ctx.run_dir / "figures" / f"{name}.png"
        retrieval_grid(
            [test[int(q)][0] for q in queries],
            [[train[int(j)][0] for j in idx[q]] for q in queries],
            hits[queries].bool(),
            path,
        )
        out["figure"] = str(path.relative_to(ctx.run_dir))
    return out


EVALUATORS: dict[str, Callable[[EvalContext, str], dict[str, Any]]] = {
    "knn": knn,
    "linear": linear,
    "linear_sgd": linear_sgd,
    "fewshot": fewshot,
    "invariance": invariance,
    "factor_probes": factor_probes,
    "corruptions": corruptions,
    "svm": svm,
    "retrieval": retrieval,
    **DENSE_EVALUATORS,
    "sensitivity": sensitivity,
    "finegrained": finegrained,
}
assert set(EVALUATORS) == {*EVALUATIONS, *OPTIONAL_EVALUATIONS, *DENSE_EVALUATIONS, *LOOC_EVALUATIONS}


def run_evaluations(ctx: EvalContext, evaluations: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``evaluations`` (default ``ctx.cfg.evaluations``) for every representation in
    ``ctx.cfg.representations``, recording each result as soon as it exists; returns the final results."""
    names = list(evaluations or ctx.cfg.evaluations)
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise ConfigError(f"unknown evaluation(s) {unknown}: use any of {', '.join(EVALUATORS)}")
    results: dict[str, Any] = {}
    representations = ctx.representations
    for name in names:
        for rep in representations:
            if (name in DENSE_EVALUATIONS or name == "linear_sgd") and is_space(rep):
                continue  # a LooC space has no feature maps, nor a backbone of its own to train through
            start = time.perf_counter()
            values = EVALUATORS[name](ctx, rep)
            key = result_key(ctx, name) if name in DENSE_EVALUATIONS else name
            key = finegrained_key(ctx) if name == "finegrained" else key
            key = classify_key(name, ctx.cfg.classify.dataset) if name in CLASSIFY_EVALUATIONS else key
            key = classify_key(name, ctx.cfg.svm.dataset) if name == "svm" else key
            results = record_result(ctx.run_dir, key, rep, values, meta=_meta(ctx, name))
            log.info("%s / %s: %s (%.1f s)", name, rep, _headline(values), time.perf_counter() - start)
    return results


def _classification(ctx: EvalContext, rep: str) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return ctx.classification_features(rep)


def _spread(labels: torch.Tensor, n: int, seed: int) -> list[int]:
    """``n`` query indices cycling through the classes (one random image of each class in turn)."""
    g = torch.Generator().manual_seed(seed)
    pools = [(labels == c).nonzero().squeeze(1) for c in torch.unique(labels)]
    pools = [p[torch.randperm(len(p), generator=g)] for p in pools if len(p)]
    out: list[int] = []
    for i in range(n):
        pool = pools[i % len(pools)]
        out.append(int(pool[(i // len(pools)) % len(pool)]))
    return out


def _numeric(values: Any) -> bool:
    return np.asarray(values).dtype.kind in "biuf"


def _meta(ctx: EvalContext, name: str) -> dict[str, Any]:
    c = ctx.cfg
    if name in DENSE_EVALUATIONS:
        return dense_meta(ctx, name)
    if name == "finegrained":
        return finegrained_meta(ctx)
    base = {"world_preset": c.world_preset, "image_size": ctx.image_size}
    if name in CLASSIFY_EVALUATIONS:
        base.update(_classify_meta(ctx))
        if c.classify.dataset != "world":
            del base["world_preset"]
    if name == "linear_sgd":
        base.update(dataclasses.asdict(c.linear_sgd))
    if name in ("knn", "corruptions"):
        base.update(k=c.knn.k, temperature=c.knn.temperature)
    if name == "fewshot":
        base.update(ways=c.fewshot.ways, shots=list(c.fewshot.shots), trials=c.fewshot.trials)
    if name == "invariance":
        base.update(datasets=list(c.invariance_sets))
    if name == "factor_probes":
        base.update(dataset=c.probes)
    if name == "svm" and c.svm.dataset == "voc":
        trainval, test = ctx.voc_classification()
        del base["world_preset"]
        base.update(
            dataset="voc2007",
            root=c.svm.root,
            train=f"trainval ({len(trainval)} images)",
            test=f"test ({len(test)} images)",
            image_size=test.image_size,
            resize=test.resize,
        )
    elif name == "svm":
        base.update(dataset=c.multilabel, difficult_below_visibility=DIFFICULT_VISIBILITY)
    if name == "sensitivity":
        base.update(dataclasses.asdict(c.sensitivity))
    if any(is_space(r) for r in ctx.representations):
        heads = ctx.looc_heads()
        base.update(
            looc_layer=heads.layer if c.looc.layer == "run" else c.looc.layer,
            looc_plus_with_v=heads.with_v if c.looc.with_v is None else c.looc.with_v,
        )
    return base


def _classify_meta(ctx: EvalContext) -> dict[str, Any]:
    """Which images the classification evaluations used: world dataset names, or the dataset, its folders
    and its size."""
    c = ctx.cfg
    if c.classify.dataset == "world":
        return {"train": c.classify_train, "test": c.classify_test}
    train, test = ctx.classification_sets()
    roots = {"train": c.classify.train_root, "test": c.classify.test_root}
    if c.classify.dataset != "folder":
        roots = {"root": c.classify.root}
    return {
        "dataset": c.classify.dataset,
        **roots,
        "train_images": len(train),
        "test_images": len(test),
        "classes": train.num_classes,
    }


def _headline(values: dict[str, Any]) -> str:
    flat = [f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float)]
    return ", ".join(flat[:4]) or ", ".join(list(values)[:6])
