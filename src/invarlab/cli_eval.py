"""``invarlab eval <evaluation> RUN`` (one sub-command per evaluation, plus ``all``) and ``invarlab run``.

Kept apart from :mod:`invarlab.cli` so that module stays about the world, training and reports; both commands
load their configs lazily, so ``invarlab --help`` does not import torch.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import typer

__all__ = ["classify_overrides", "eval_app", "load_eval_config", "load_run_config", "run_command"]

_EVALUATIONS = ("knn", "linear", "fewshot", "invariance", "factor_probes", "corruptions", "svm", "retrieval")
_HELP = {
    "knn": "weighted kNN category accuracy (top-1 / top-5) of unseen instances",
    "linear": "linear probe (L-BFGS, weight decay chosen on a validation split)",
    "fewshot": "n-way k-shot logistic regression, mean and 95% confidence interval",
    "invariance": "RIS Top-10 / Top-25 for each invariance-set dataset (PAPERS.md §1.3)",
    "factor_probes": "how well a linear probe decodes each world factor from the features",
    "corruptions": "accuracy of kNN under ImageNet-C-style corruptions, 5 severities",
    "svm": "VOC07-style multi-label linear SVM mAP on scenes",
    "retrieval": "nearest-neighbour precision and the retrieval grid (figures/retrieval.png)",
}

eval_app = typer.Typer(
    help="Evaluate a run's backbone against a random-init floor; numbers go into RUN/results.json.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

_RUN = typer.Argument(..., help="run folder (its newest checkpoint; results, figures and caches go there)")
_OVERRIDES = typer.Argument(
    None, metavar="KEY=VALUE", help="overrides of the evaluation config", show_default=False
)
_CONFIG = typer.Option(
    None, "--config", "-c", help="YAML evaluation config (configs/eval/NAME.yaml or a file)"
)
_CHECKPOINT = typer.Option(
    None,
    "--checkpoint",
    help="evaluate this file (invarlab, torchvision or official MoCo v2) instead of RUN's",
)
_ARCH = typer.Option(None, "--arch", help="backbone of a torchvision / MoCo checkpoint (default resnet50)")


def _eval_schema() -> type:
    return importlib.import_module("invarlab.eval.config").EvalConfig


def load_eval_config(config: str | Path | None, overrides: list[str] | None) -> Any:
    """Defaults, then ``config`` (a preset of ``configs/eval/`` or a file), then ``key=value`` overrides."""
    from invarlab.config import load_config

    return load_config(_eval_schema(), config, overrides or [], group="eval")


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])


def _evaluate(
    names: list[str] | None,
    run: Path,
    overrides: list[str] | None,
    config: str | None,
    checkpoint: Path | None,
    arch: str | None,
) -> None:
    from invarlab.eval.context import EvalContext
    from invarlab.eval.suite import run_evaluations
    from invarlab.results import results_path

    cfg = load_eval_config(config, overrides)
    _setup_logging()
    run_evaluations(EvalContext(run, cfg, checkpoint, arch), names)
    typer.echo(f"results: {results_path(run)}")


_CLASSIFY = ("knn", "linear", "fewshot", "corruptions", "retrieval")
_HELP["linear_sgd"] = (
    "standard linear evaluation: SGD on the frozen backbone with crops and flips (MoCo's lincls; "
    "linear_sgd.epochs=N)"
)
_CLS_DATASET = typer.Option(
    None,
    "--dataset",
    help="world (default), folder (--train-root, --test-root), imagenet, cifar10, cifar100 or stl10 (--root)",
)
_CLS_ROOT = typer.Option(None, "--root", help="imagenet / cifar10 / cifar100 / stl10: the dataset's folder")
_TRAIN_ROOT = typer.Option(None, "--train-root", help="folder: labelled training images (<class>/<image>)")
_TEST_ROOT = typer.Option(None, "--test-root", help="folder: test images, in the training folder's classes")


def classify_overrides(
    dataset: str | None, root: Path | None, train_root: Path | None, test_root: Path | None
) -> list[str]:
    """The ``classify.*`` overrides that the ``--dataset`` / ``--root`` / ``--train-root`` / ``--test-root``
    options of a classification command stand for."""
    given = {"dataset": dataset, "root": root, "train_root": train_root, "test_root": test_root}
    if dataset is None and any(v is not None for v in given.values()):
        from invarlab.errors import ConfigError

        raise ConfigError(
            "--root / --train-root / --test-root need --dataset (folder, imagenet, cifar10, ...)"
        )
    return [f"classify.{k}={v}" for k, v in given.items() if v is not None]


def _make_classify_command(name: str) -> None:
    def command(
        run: Path = _RUN,
        overrides: list[str] | None = _OVERRIDES,
        config: str | None = _CONFIG,
        checkpoint: Path | None = _CHECKPOINT,
        arch: str | None = _ARCH,
        dataset: str | None = _CLS_DATASET,
        root: Path | None = _CLS_ROOT,
        train_root: Path | None = _TRAIN_ROOT,
        test_root: Path | None = _TEST_ROOT,
    ) -> None:
        extra = classify_overrides(dataset, root, train_root, test_root)
        _evaluate([name], run, [*(overrides or []), *extra], config, checkpoint, arch)

    command.__doc__ = (
        f"{_HELP[name][0].upper()}{_HELP[name][1:]}; on the world, or with --dataset on your own labelled "
        f"images (results.json: {name} or {name}_<dataset>)."
    )
    eval_app.command(name.replace("_", "-"))(command)


def _make_command(name: str) -> None:
    def command(
        run: Path = _RUN,
        overrides: list[str] | None = _OVERRIDES,
        config: str | None = _CONFIG,
        checkpoint: Path | None = _CHECKPOINT,
        arch: str | None = _ARCH,
    ) -> None:
        _evaluate([name], run, overrides, config, checkpoint, arch)

    command.__doc__ = _HELP[name][0].upper() + _HELP[name][1:] + "."
    eval_app.command(name.replace("_", "-"))(command)


_DATASET = typer.Option(
    None, "--dataset", help="score a real dataset's sets instead of the world's: aloi, got10k or pascal3d"
)
_ROOT = typer.Option(None, "--root", help="the real dataset's folder (layouts: docs/datasets.md)")


def invariance_command(
    run: Path = _RUN,
    overrides: list[str] | None = _OVERRIDES,
    config: str | None = _CONFIG,
    checkpoint: Path | None = _CHECKPOINT,
    arch: str | None = _ARCH,
    dataset: str | None = _DATASET,
    root: Path | None = _ROOT,
) -> None:
    """RIS Top-10 / Top-25 per invariance-set dataset (PAPERS.md §1.3): the world's, or with --dataset the
    sets of ALOI, GOT-10k or Pascal3D+ (results.json: invariance_<dataset>)."""
    if dataset is None:
        if root is not None:
            from invarlab.errors import ConfigError

            raise ConfigError("--root needs --dataset aloi|got10k|pascal3d (the world needs no folder)")
        _evaluate(["invariance"], run, overrides, config, checkpoint, arch)
        return
    from invarlab.eval.context import EvalContext
    from invarlab.eval.real_invariance import real_invariance
    from invarlab.results import results_path

    cfg = load_eval_config(config, overrides)
    _setup_logging()
    real_invariance(EvalContext(run, cfg, checkpoint, arch), dataset, root)
    typer.echo(f"results: {results_path(run)}")


_SVM_DATASET = typer.Option(None, "--dataset", help="world (default: the preset's scenes) or voc (VOC2007)")
_SVM_ROOT = typer.Option(
    None, "--root", help="voc: the VOC2007 folder (JPEGImages, Annotations, ImageSets/Main)"
)


def svm_command(
    run: Path = _RUN,
    overrides: list[str] | None = _OVERRIDES,
    config: str | None = _CONFIG,
    checkpoint: Path | None = _CHECKPOINT,
    arch: str | None = _ARCH,
    dataset: str | None = _SVM_DATASET,
    root: Path | None = _SVM_ROOT,
) -> None:
    """VOC07-style multi-label linear SVM mAP: on the world's scenes, or with --dataset voc --root PATH on real
    VOC2007, trainval -> test (PAPERS.md §2.4.1; results.json: svm or svm_voc)."""
    extra = [f"svm.dataset={dataset}"] if dataset else []
    extra += [f"svm.root={root}"] if root is not None else []
    _evaluate(["svm"], run, [*(overrides or []), *extra], config, checkpoint, arch)


for _name in _EVALUATIONS:
    if _name == "invariance":
        eval_app.command("invariance")(invariance_command)
    elif _name == "svm":
        eval_app.command("svm")(svm_command)
    elif _name in _CLASSIFY:
        _make_classify_command(_name)
        if _name == "linear":
            _make_classify_command("linear_sgd")  # beside the fast probe it is the slow twin of
    else:
        _make_command(_name)

_DENSE_HELP = {
    "segment_retrieval": "semantic segment retrieval: mask prototypes, 1-NN bank, mIoU (PAPERS.md §2.4.3)",
    "label_propagation": "video instance segmentation by label propagation, DAVIS J&F (PAPERS.md §2.4.4)",
    "seg_probe": "per-pixel linear probe on frozen dense features, mIoU",
}
_DENSE_DATASET = typer.Option(
    None, "--dataset", help="world (default), voc (segment-retrieval, seg-probe) or davis (label-propagation)"
)
_DENSE_ROOT = typer.Option(None, "--root", help="the VOC or DAVIS folder (layouts: docs/eval_dense.md)")


def _make_dense_command(name: str) -> None:
    def command(
        run: Path = _RUN,
        overrides: list[str] | None = _OVERRIDES,
        config: str | None = _CONFIG,
        checkpoint: Path | None = _CHECKPOINT,
        arch: str | None = _ARCH,
        dataset: str | None = _DENSE_DATASET,
        root: Path | None = _DENSE_ROOT,
    ) -> None:
        extra = [f"dense.dataset={dataset}"] if dataset else []
        extra += [f"dense.root={root}"] if root is not None else []
        _evaluate([name], run, [*(overrides or []), *extra], config, checkpoint, arch)

    command.__doc__ = (
        f"{_DENSE_HELP[name][0].upper()}{_DENSE_HELP[name][1:]}; results.json: {name} (world) or "
        f"{name}_<dataset>."
    )
    eval_app.command(name.replace("_", "-"))(command)


for _name in _DENSE_HELP:
    _make_dense_command(_name)


_LOOC_HELP = {
    "sensitivity": "P3's augmentation-sensitivity probes: rotation, colour, light colour, texture (linear)",
    "finegrained": "fine-grained classification: linear, kNN, k-shot; world instances, CUB or Flowers-102",
}
_HELP.update(_LOOC_HELP)
_make_command("sensitivity")
_FG_DATASET = typer.Option(None, "--dataset", help="world (default), cub or flowers")
_FG_ROOT = typer.Option(None, "--root", help="the CUB_200_2011 or Flowers-102 folder (docs/eval_looc.md)")


@eval_app.command("finegrained")
def finegrained_command(
    run: Path = _RUN,
    overrides: list[str] | None = _OVERRIDES,
    config: str | None = _CONFIG,
    checkpoint: Path | None = _CHECKPOINT,
    arch: str | None = _ARCH,
    dataset: str | None = _FG_DATASET,
    root: Path | None = _FG_ROOT,
) -> None:
    """Fine-grained classification (PAPERS.md §3.8): linear probe, kNN and all-way 5- / 10-shot on the world's
    instances, or with --dataset cub|flowers --root PATH (results.json: finegrained or finegrained_<dataset>)."""
    extra = [f"finegrained.dataset={dataset}"] if dataset else []
    extra += [f"finegrained.root={root}"] if root is not None else []
    _evaluate(["finegrained"], run, [*(overrides or []), *extra], config, checkpoint, arch)


@eval_app.command("all")
def all_command(
    run: Path = _RUN,
    overrides: list[str] | None = _OVERRIDES,
    config: str | None = _CONFIG,
    checkpoint: Path | None = _CHECKPOINT,
    arch: str | None = _ARCH,
    dataset: str | None = _CLS_DATASET,
    root: Path | None = _CLS_ROOT,
    train_root: Path | None = _TRAIN_ROOT,
    test_root: Path | None = _TEST_ROOT,
) -> None:
    """Every evaluation listed in the config's `evaluations` (all by default), for model and random; with
    --dataset only the classification ones (kNN, linear, few-shot, corruptions, retrieval), on your images."""
    extra = classify_overrides(dataset, root, train_root, test_root)
    names = None
    if dataset not in (None, "world") and not any(o.startswith("evaluations=") for o in overrides or []):
        names = [n for n in _EVALUATIONS if n in _CLASSIFY]
    _evaluate(names, run, [*(overrides or []), *extra], config, checkpoint, arch)


def load_run_config(args: list[str] | None, config: Path | None) -> Any:
    """``[PRESET] [key=value ...]`` or ``--config FILE [key=value ...]``; a preset is ``configs/NAME.yaml``
    (default ``quickstart``)."""
    from invarlab.config import load_config
    from invarlab.pipeline import RunConfig

    args = list(args or [])
    preset: str | Path | None = config
    if preset is None and args and "=" not in args[0]:
        preset = args.pop(0)
    return load_config(RunConfig, preset or "quickstart", args, group=None)


def run_command(
    args: list[str] | None = typer.Argument(
        None,
        metavar="PRESET KEY=VALUE",
        help="a run config (configs/NAME.yaml, default quickstart) or YAML file, then key=value overrides "
        "(train.steps=100, eval.evaluations=[knn], ...)",
        show_default=False,
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML run config, instead of PRESET."),
) -> None:
    """Render the world, train, evaluate against a random-init floor and write the report, in one go."""
    cfg = load_run_config(args, config)
    _setup_logging()
    out = importlib.import_module("invarlab.pipeline").run_pipeline(cfg)
    typer.echo(f"report: {out}")
