"""Which images of a labelled source to train on: domain-specific class subsets, long-tailed subsamples and
size-matched subsets (P2's dataset-bias axes, PAPERS.md §2.3; P1's size-matched ImageNet / COCO comparison,
§1.5). Pure functions of the labels that return sorted sample indices; every random choice takes a seed.

* :func:`select_classes` / :func:`class_subset_indices`: a class group ("domain") by names, glob patterns
  (``n0208*``) or group names (COCO supercategories such as ``animal``).
* :func:`long_tail_counts` / :func:`long_tail_indices`: the exponential profile of CIFAR-LT,
  ``n_c = ⌊n_max · IF^(−c / (C − 1))⌋`` for the class of rank ``c = 0 .. C−1``: the head keeps ``n_max``
  images, the tail ``n_max / IF``, and the counts fall geometrically in between.
* :func:`subsample_indices` / :func:`match_counts`: a seeded random subset of a given size; several sources cut
  to one count so a comparison differs in content, not in size.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "class_subset_indices",
    "long_tail_counts",
    "long_tail_indices",
    "match_counts",
    "sample_indices",
    "select_classes",
    "subsample_indices",
]

CLASS_ORDERS = ("index", "size", "random")


def _labels(labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _generator(seed: int, *salt: str) -> torch.Generator:
    # A separate stream per purpose (and per source), so one choice never shifts another.
    mixed = zlib.crc32("/".join((str(seed), *salt)).encode())
    return torch.Generator().manual_seed(mixed)


def select_classes(
    class_names: Sequence[str],
    wanted: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[int]:
    """Indices (ascending) of the classes named by ``wanted``: exact names, glob patterns, or keys of
    ``groups`` (a group stands for its member class names). An entry that matches nothing raises
    ``ValueError`` listing some valid names."""
    index = {name: i for i, name in enumerate(class_names)}
    chosen: set[int] = set()
    for entry in wanted:
        names = list((groups or {}).get(entry, ())) or [
            n for n in class_names if fnmatch.fnmatchcase(n, entry)
        ]
        hits = [index[n] for n in names if n in index]
        if not hits:
            sample = ", ".join(list(class_names)[:8]) + (", ..." if len(class_names) > 8 else "")
            extra = f"; groups: {', '.join(sorted(groups))}" if groups else ""
            raise ValueError(f"class {entry!r} matches no class (classes: {sample}{extra})")
        chosen.update(hits)
    return sorted(chosen)


def class_subset_indices(
    labels: Sequence[int] | np.ndarray | torch.Tensor, classes: Sequence[int]
) -> np.ndarray:
    """Indices of the samples whose label is in ``classes``."""
    return np.nonzero(np.isin(_labels(labels), np.asarray(list(classes), dtype=np.int64)))[0]


def long_tail_counts(num_classes: int, n_max: int, imbalance: float) -> list[int]:
    """``n_c = ⌊n_max · imbalance^(−c / (C − 1))⌋`` for ranks ``c = 0 .. C−1`` (at least 1; a single class
    keeps ``n_max``). ``imbalance`` = ``n_0 / n_{C−1}`` before rounding, ≥ 1. The floor has a 1e-9 tolerance
    against a product landing a hair below an integer."""
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1 (n_max / n_min), got {imbalance}")
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need num_classes >= 1 and n_max >= 1, got {num_classes} and {n_max}")
    if num_classes == 1:
        return [int(n_max)]
    return [
        max(1, int(np.floor(n_max * imbalance ** (-c / (num_classes - 1)) + 1e-9)))
        for c in range(num_classes)
    ]


def long_tail_indices(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    imbalance: float,
    seed: int,
    n_max: int | None = None,
    class_order: str = "index",
) -> np.ndarray:
    """A long-tailed subsample: ``long_tail_counts(C, n_max, imbalance)[rank]`` random images of each class
    present (labels ≥ 0). The rank is the label's order (``index``, CIFAR-LT), descending image count
    (``size``: the largest class is the head) or a seeded permutation (``random``). ``n_max`` defaults to
    the smallest class's count, so every class has what the profile asks; a larger ``n_max`` that a class
    cannot supply raises ``ValueError``."""
    y = _labels(labels)
    classes, counts = np.unique(y[y >= 0], return_counts=True)
    if len(classes) == 0:
        raise ValueError("no labelled samples to subsample")
    if class_order == "index":
        ranked = np.arange(len(classes))
    elif class_order == "size":
        ranked = np.argsort(-counts, kind="stable")
    elif class_order == "random":
        ranked = torch.randperm(len(classes), generator=_generator(seed, "class-order")).numpy()
    else:
        raise ValueError(f"class_order {class_order!r}: use one of {', '.join(CLASS_ORDERS)}")
    n_max = int(counts.min()) if n_max is None else int(n_max)
    targets = long_tail_counts(len(classes), n_max, imbalance)
    out = []
    for rank, k in enumerate(ranked):
        members = np.nonzero(y == classes[k])[0]
        if targets[rank] > len(members):
            raise ValueError(
                f"class {int(classes[k])} (rank {rank}) has {len(members)} images, the profile asks for "
                f"{targets[rank]}; lower n_max (default: the smallest class, {int(counts.min())})"
            )
        pick = torch.randperm(len(members), generator=_generator(seed, "long-tail", str(int(classes[k]))))
        out.append(members[pick[: targets[rank]].numpy()])
    return np.sort(np.concatenate(out))


def subsample_indices(n: int, count: int, seed: int, salt: str = "") -> np.ndarray:
    """``count`` of ``range(n)`` drawn without replacement by a generator seeded from ``(seed, salt)``,
    sorted; all of them when ``count >= n``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count >= n:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=_generator(seed, "subsample", salt))[:count].numpy())


def match_counts(sizes: Sequence[int], seed: int, count: int | None = None) -> list[np.ndarray]:
    """Indices cutting each source (of ``sizes[i]`` images) to the same number: ``count``, default the
    smallest size. Source ``i`` draws from its own stream, so adding a source never changes the others'
    subsets. A source smaller than ``count`` raises ``ValueError``."""
    target = min(sizes) if count is None else int(count)
    short = [i for i, n in enumerate(sizes) if n < target]
    if short:
        raise ValueError(f"source {short[0]} has {sizes[short[0]]} images, fewer than the {target} asked")
    return [subsample_indices(n, target, seed, salt=f"source-{i}") for i, n in enumerate(sizes)]


def sample_indices(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    seed: int,
    classes: Sequence[str] = (),
    imbalance: float = 1.0,
    max_images: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
    class_order: str = "index",
) -> np.ndarray:
    """The three steps in order, as a training source applies them: keep ``classes`` (all when empty), then
    the long-tailed subsample (when ``imbalance`` > 1; ranks follow ``class_order`` over the kept classes),
    then a random ``max_images`` (when > 0). Returns indices into ``labels``, sorted."""
    y = _labels(labels)
    idx = np.arange(len(y))
    if classes:
        idx = class_subset_indices(y, select_classes(class_names, classes, groups))
    if imbalance > 1:
        idx = idx[long_tail_indices(y[idx], imbalance, seed, class_order=class_order)]
    if max_images > 0:
        idx = idx[subsample_indices(len(idx), max_images, seed, salt="max-images")]
    return idx
