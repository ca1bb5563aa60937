"""Which labelled images kNN, linear, few-shot, corruptions and retrieval use: the ``classify`` section of
:class:`invarlab.eval.config.EvalConfig`. ``world`` (the default) takes the world preset's ``classify_train`` /
``classify_test``; any other dataset is read from disk (:mod:`invarlab.data.classification`) and its results
go under ``<evaluation>_<dataset>`` in results.json (``knn_cifar10``, ``linear_folder``, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from invarlab.config import opt
from invarlab.data.classification import CLASSIFICATION_DATASETS

__all__ = ["CLASSIFY_DATASETS", "CLASSIFY_EVALUATIONS", "ClassifyConfig", "classify_key"]

CLASSIFY_DATASETS = ("world", *CLASSIFICATION_DATASETS)
# The evaluations that read the classify sets (their results.json key takes the dataset as a suffix).
CLASSIFY_EVALUATIONS = ("knn", "linear", "linear_sgd", "fewshot", "corruptions", "retrieval")


@dataclass
class ClassifyConfig:
    """The labelled train (bank / probe training set) and test split of the classification evaluations."""

    dataset: str = opt(
        "world",
        f"world (the world preset's classify_train / classify_test), or {', '.join(CLASSIFICATION_DATASETS)}",
    )
    root: str = opt("", "imagenet, cifar10, cifar100, stl10: the dataset's folder (docs/evaluation.md)")
    train_root: str = opt("", "folder: the labelled training folder (<class>/<image>)")
    test_root: str = opt("", "folder: the test folder, with the training folder's class names")
    val_labels: str = opt("", "imagenet: label file of a flat val folder (default: found in the root)")
    resize: int = opt(
        0,
        "folder, imagenet: shorter side before the centre crop; 0 = the image size (ImageNet's protocol: 256 for 224)",
        range=(0, 4096),
    )


def classify_key(evaluation: str, dataset: str) -> str:
    """The results.json key of ``evaluation`` on ``dataset``: the name alone on the world, else
    ``<evaluation>_<dataset>``."""
    return evaluation if dataset == "world" else f"{evaluation}_{dataset}"
