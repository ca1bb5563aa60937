"""RIS on real invariance datasets (ALOI, GOT-10k, Pascal3D+) for a run: the sets of
:mod:`invarlab.data.aloi` / :mod:`~invarlab.data.got10k` / :mod:`~invarlab.data.pascal3d`, features cached in
the run folder, scores recorded in ``results.json`` as ``invariance_<dataset>`` (beside the world's
``invariance``): ``{representation: {kind: {top10, top25, images, sets, scored_sets, classes, ...}}}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from invarlab.data.sets import InvarianceSets
from invarlab.errors import ConfigError
from invarlab.eval.context import EvalContext
from invarlab.eval.real_config import REAL_DATASETS, RealSetsConfig

__all__ = ["build_real_sets", "real_invariance", "results_name"]

log = logging.getLogger(__name__)

_KINDS = {
    "aloi": ("viewpoint", "illum_direction", "illum_color"),
    "got10k": ("occlusion",),
    "pascal3d": ("instance", "instance_viewpoint"),
}


def results_name(dataset: str) -> str:
    """The ``results.json`` section of a real dataset's scores: ``invariance_<dataset>``."""
    return f"invariance_{dataset}"


def _check(dataset: str) -> None:
    if dataset not in REAL_DATASETS:
        raise ConfigError(
            f"--dataset {dataset!r} is not a real invariance dataset: use {', '.join(REAL_DATASETS)}"
        )


def _kinds(dataset: str, kinds: list[str]) -> list[str]:
    bad = [k for k in kinds if k not in _KINDS[dataset]]
    if bad or not kinds:
        raise ConfigError(
            f"real_sets.{dataset}.kinds={kinds}: use one or more of {', '.join(_KINDS[dataset])}"
        )
    return kinds


def build_real_sets(
    dataset: str, root: str | Path | None, cfg: RealSetsConfig | None = None
) -> dict[str, InvarianceSets]:
    """``{kind: InvarianceSets}`` of ``dataset`` under ``root`` (default: the config section's ``root``)."""
    _check(dataset)
    cfg = cfg or RealSetsConfig()
    section = getattr(cfg, dataset)
    root = root or section.root
    if not root:
        raise ConfigError(
            f"{dataset}: no dataset folder; pass --root PATH (or set real_sets.{dataset}.root); "
            "see docs/datasets.md for the layout"
        )
    if dataset == "aloi":
        from invarlab.data.aloi import aloi_sets

        return {
            k: aloi_sets(root, k, section.size, section.max_objects) for k in _kinds(dataset, section.kinds)
        }
    if dataset == "got10k":
        from invarlab.data.got10k import got10k_sets

        sets = got10k_sets(
            root,
            size=section.size,
            seed=section.seed,
            min_cover_range=section.min_cover_range,
            stride=section.stride,
            max_videos=section.max_videos,
            drop_absent=section.drop_absent,
        )
        return {"occlusion": sets}
    from invarlab.data.pascal3d import pascal3d_sets

    kinds = _kinds(dataset, section.kinds)
    both = pascal3d_sets(root, section.size, tuple(section.subsets), tuple(section.classes))
    return {k: both[k] for k in kinds}


def real_invariance(ctx: EvalContext, dataset: str, root: str | Path | None = None) -> dict[str, Any]:
    """Score every set kind of ``dataset`` for each of ``ctx.cfg.representations`` and record them under
    ``invariance_<dataset>``; returns the whole updated results."""
    from invarlab.eval.features import cached_features
    from invarlab.eval.invariance import ris
    from invarlab.results import record_result

    cfg: RealSetsConfig = ctx.cfg.real_sets
    sets = build_real_sets(dataset, root, cfg)
    section = getattr(cfg, dataset)
    meta = {
        "dataset": dataset,
        "root": str(Path(root or section.root).expanduser().resolve()),
        "image_size": ctx.image_size,
        "options": {k: v for k, v in dataclasses.asdict(section).items() if k != "root"},
        "counts": {kind: s.summary() for kind, s in sets.items()},
    }
    results: dict[str, Any] = {}
    for rep in ctx.cfg.representations:
        start = time.perf_counter()
        values = {}
        for kind, s in sets.items():
            # One cache entry per image list: Pascal3D+'s two kinds share their images and features.
            feats, _ = cached_features(
                ctx.run_dir,
                ctx.encoder(rep),
                s,
                f"{dataset}-{s.image_key()}",
                image_size=ctx.image_size,
                batch_size=ctx.cfg.batch_size,
                device=ctx.device,
            )
            scores = ris(feats, torch.from_numpy(s.set_ids), torch.from_numpy(s.class_ids))
            values[kind] = {f"top{k}": v for k, v in scores.items()} | s.summary()
        results = record_result(ctx.run_dir, results_name(dataset), rep, values, meta=meta)
        log.info(
            "%s / %s: %s (%.1f s)",
            results_name(dataset),
            rep,
            ", ".join(f"{k} {v['top25']:.3g}" for k, v in values.items()),
            time.perf_counter() - start,
        )
    return results
