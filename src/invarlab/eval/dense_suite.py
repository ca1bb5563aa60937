"""The dense evaluations of a run (``segment_retrieval``, ``label_propagation``, ``seg_probe``) on the world or
on VOC / DAVIS, as :mod:`invarlab.eval.suite` calls them: ``evaluator(ctx, representation) -> metrics``.

Data (``ctx.cfg.dense``):

* world: the scenes dataset (category and instance masks; a seeded half is the train bank / probe training
  set, the rest val, as the SVM splits it) and the clips dataset (instance masks whose ids persist through a
  clip; occluder pixels count as background);
* ``voc``: ``VOC<year>`` segmentation ``voc_train`` / ``voc_val``, resized to ``voc_size`` square;
* ``davis``: DAVIS-2017 ``davis_split`` at native resolution (or ``davis_size``).

Results go to ``results.json`` under the evaluation's name for the world and ``<name>_<dataset>`` otherwise
(:func:`result_key`), so world and real numbers sit side by side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invarlab.data.voc import IGNORE_INDEX, SegmentationSample
from invarlab.errors import ConfigError, DataError
from invarlab.eval.context import EvalContext
from invarlab.eval.dense import DenseNet

__all__ = ["DENSE_EVALUATORS", "dense_meta", "result_key"]


def result_key(ctx: EvalContext, name: str) -> str:
    """``name`` on the world, ``<name>_<dataset>`` on VOC / DAVIS."""
    dataset = ctx.cfg.dense.dataset
    return name if dataset == "world" else f"{name}_{dataset}"


def _check_dataset(ctx: EvalContext, name: str, allowed: tuple[str, ...]) -> str:
    dataset = ctx.cfg.dense.dataset
    if dataset not in allowed:
        raise ConfigError(
            f"{name.replace('_', '-')} runs on {' or '.join(allowed)}, not dense.dataset={dataset} "
            f"(--dataset {'|'.join(allowed)})"
        )
    if dataset != "world" and not ctx.cfg.dense.root:
        raise DataError(
            f"--dataset {dataset} needs --root (dense.root): the folder that holds {dataset.upper()}"
        )
    return dataset


def _net(ctx: EvalContext, rep: str, layer: str, stride_change: str) -> DenseNet:
    size = ctx.image_size if ctx.cfg.dense.dataset == "world" else None
    return DenseNet(ctx.encoder(rep), layer, stride_change, size, ctx.device)


# --------------------------------------------------------------------------------------------- images
class _Split:
    """Indexable segmentation samples of one split: ``len``, ``sample(i)``, class names."""

    def __init__(self, n: int, sample: Callable[[int], SegmentationSample], names: tuple[str, ...]) -> None:
        self.n, self.sample, self.names = n, sample, names


def _world_splits(ctx: EvalContext) -> tuple[_Split, _Split]:
    from invarlab.world.catalog import CATEGORY_NAMES

    ds = ctx.dataset(ctx.cfg.dense.scenes)
    rendered = ds.rendered
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ctx.cfg.seed)).tolist()
    half = len(order) // 2
    names = ("background", *CATEGORY_NAMES)

    def sample(pos: int) -> SegmentationSample:
        j = int(ds.indices[pos])
        classes = torch.from_numpy(np.asarray(rendered.category_mask[j], dtype=np.int64))
        objects = torch.from_numpy(np.asarray(rendered.instance_mask[j], dtype=np.int64))
        return SegmentationSample(ds[pos][0], classes, objects)  # occluders: class 0, object 255 (ignored)

    limit = ctx.cfg.dense.max_items or len(order)
    train, val = order[:half][:limit], order[half:][:limit]
    return (
        _Split(len(train), lambda i: sample(train[i]), names),
        _Split(len(val), lambda i: sample(val[i]), names),
    )


def _voc_splits(ctx: EvalContext, objects: bool) -> tuple[_Split, _Split]:
    from invarlab.data.voc import VOCSegmentation

    d = ctx.cfg.dense
    out = []
    for split in (d.voc_train, d.voc_val):
        ds = VOCSegmentation(d.root, split, d.voc_year, d.voc_size or None, objects=objects)
        n = min(len(ds), d.max_items or len(ds))
        out.append(_Split(n, ds.sample, ds.class_names))
    return out[0], out[1]


def _splits(ctx: EvalContext, objects: bool = False) -> tuple[_Split, _Split]:
    return _world_splits(ctx) if ctx.cfg.dense.dataset == "world" else _voc_splits(ctx, objects)


def _maps(net: DenseNet, split: _Split, batch_size: int) -> Iterator[tuple[Tensor, SegmentationSample]]:
    """``(dense map (C, h, w), sample)`` for every image of ``split``; images of one size share a forward."""
    pending: list[SegmentationSample] = []

    def flush() -> Iterator[tuple[Tensor, SegmentationSample]]:
        feats = net(torch.stack([s.image for s in pending]))
        yield from zip(feats, pending, strict=True)
        pending.clear()

    for i in range(split.n):
        s = split.sample(i)
        if pending and (len(pending) == batch_size or s.image.shape != pending[0].image.shape):
            yield from flush()
        pending.append(s)
    if pending:
        yield from flush()


# ---------------------------------------------------------------------------------------- evaluations
def _mask_weights(mode: str, feats: Tensor, s: SegmentationSample) -> Tensor:
    """``(S, H, W)`` masks in [0, 1] of one image for retrieval mode ``mode``."""
    from invarlab.eval.retrieval import saliency_weights

    if mode == "saliency":
        return saliency_weights(feats, s.classes.shape)
    if mode == "gt":
        return ((s.classes != 0) & (s.classes != IGNORE_INDEX)).float()[None]
    if s.objects is None:
        raise DataError("retrieval.masks=gt_instances needs instance masks (VOC: SegmentationObject/)")
    ids = [k for k in torch.unique(s.objects).tolist() if 0 < k < IGNORE_INDEX]
    return torch.stack([s.objects == k for k in ids]).float() if ids else torch.zeros(0, *s.classes.shape)


def retrieval_masks(masks: str, dataset: str) -> str:
    """The mask mode ``masks`` resolves to: ``auto`` is one mask per object on the world, whose scenes hold 2-6
    categories (one mask over all of them would take the majority class), and MaskContrast's one mask per image
    on VOC."""
    if masks != "auto":
        return masks
    return "gt_instances" if dataset == "world" else "gt"


def segment_retrieval(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.retrieval import VOC_RETRIEVAL_CLASSES
    from invarlab.eval.retrieval import segment_retrieval as retrieve

    dataset = _check_dataset(ctx, "segment_retrieval", ("world", "voc"))
    c, d = ctx.cfg.dense.retrieval, ctx.cfg.dense
    masks = retrieval_masks(c.masks, dataset)
    train, val = _splits(ctx, objects=masks == "gt_instances")
    net = _net(ctx, rep, c.layer, c.stride_change)

    def items(split: _Split) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for feats, s in _maps(net, split, d.batch_size):
            weights = _mask_weights(masks, feats, s).to(feats.device)
            yield feats, weights, s.classes

    subsets = {"7cls": sorted(VOC_RETRIEVAL_CLASSES.values())} if dataset == "voc" else None
    return retrieve(items(train), items(val), val.names, c.threshold, subsets=subsets)


def seg_probe(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.seg_probe import seg_probe as probe

    _check_dataset(ctx, "seg_probe", ("world", "voc"))
    c, d = ctx.cfg.dense.seg_probe, ctx.cfg.dense
    train, val = _splits(ctx)
    net = _net(ctx, rep, c.layer, c.stride_change)

    def items(split: _Split) -> Iterator[tuple[Tensor, Tensor]]:
        for feats, s in _maps(net, split, d.batch_size):
            yield feats, s.classes

    per_image = math.ceil(c.pixels / max(1, train.n))
    return probe(
        items(train),
        items(val),
        val.names,
        per_image,
        c.weight_decay,
        seed=ctx.cfg.seed,
        max_iter=c.max_iter,
        device=ctx.device,
    )


def _world_clips(ctx: EvalContext) -> Iterator[tuple[str, Tensor, Tensor]]:
    """``(name, frames uint8 (T, 3, H, W), masks (T, H, W))`` per clip of the clips dataset."""
    name = ctx.cfg.dense.clips
    if ctx.kind(name) != "clips":
        raise ConfigError(
            f"dense.clips={name} is a '{ctx.kind(name)}' dataset; label propagation needs kind: clips"
        )
    ds = ctx.dataset(name)
    meta = ds.meta
    clip, frame = np.asarray(meta["clip"]), np.asarray(meta["frame"])
    clip_ids = np.unique(clip)[: ctx.cfg.dense.max_items or None]
    for c in clip_ids:
        pos = np.nonzero(clip == c)[0]
        pos = pos[np.argsort(frame[pos], kind="stable")]
        frames = torch.stack([ds[int(p)][0] for p in pos])
        masks = torch.from_numpy(np.asarray(ds.rendered.instance_mask[ds.indices[pos]], dtype=np.int64))
        yield f"clip_{int(c):04d}", frames, torch.where(masks == IGNORE_INDEX, 0, masks)


def label_propagation(ctx: EvalContext, rep: str) -> dict[str, Any]:
    from invarlab.eval.propagation import evaluate_videos

    dataset = _check_dataset(ctx, "label_propagation", ("world", "davis"))
    c, d = ctx.cfg.dense.propagation, ctx.cfg.dense
    net = _net(ctx, rep, c.layer, c.stride_change)

    def videos() -> Iterator[tuple[str, Tensor, Tensor, Tensor]]:
        if dataset == "world":
            source: Any = ((n, f, m, torch.ones(len(f), dtype=torch.bool)) for n, f, m in _world_clips(ctx))
        else:
            from invarlab.data.davis import DavisVideos

            vids = DavisVideos(d.root, d.davis_split, size=d.davis_size or None)
            source = (
                (v.name, v.frames, v.masks, v.annotated)
                for v in (vids[i] for i in range(min(len(vids), d.max_items or len(vids))))
            )
        for name, frames, masks, annotated in source:
            feats = torch.cat(
                [net(frames[i : i + d.batch_size]) for i in range(0, len(frames), d.batch_size)]
            )
            yield name, feats, masks, annotated

    return evaluate_videos(
        videos(),
        bound_th=c.bound_th,
        topk=c.topk,
        context=c.context,
        radius=c.radius,
        temperature=c.temperature,
        tile=c.tile,
    )


def dense_meta(ctx: EvalContext, name: str) -> dict[str, Any]:
    """The settings recorded with a dense evaluation's numbers."""
    d = ctx.cfg.dense
    section = {"segment_retrieval": d.retrieval, "label_propagation": d.propagation, "seg_probe": d.seg_probe}
    meta: dict[str, Any] = {"dataset": d.dataset, **dataclasses.asdict(section[name])}
    if name == "segment_retrieval":
        meta["masks"] = retrieval_masks(d.retrieval.masks, d.dataset)
    if d.dataset == "world":
        meta.update(
            world_preset=ctx.cfg.world_preset,
            image_size=ctx.image_size,
            data=d.clips if name == "label_propagation" else d.scenes,
        )
    elif d.dataset == "voc":
        meta.update(root=d.root, year=d.voc_year, train=d.voc_train, val=d.voc_val, size=d.voc_size)
    else:
        meta.update(root=d.root, split=d.davis_split, size=d.davis_size or "native")
    if d.max_items:
        meta["max_items"] = d.max_items
    return meta


DENSE_EVALUATORS: dict[str, Callable[[EvalContext, str], dict[str, Any]]] = {
    "segment_retrieval": segment_retrieval,
    "label_propagation": label_propagation,
    "seg_probe": seg_probe,
}
