"""invarlab.eval.svm: VOC AP against hand-computed values and scikit-learn's average_precision_score where the
two must agree; the SVM protocol (normalisation, label mapping, LinearSVC settings) against a direct sklearn fit;
validation-only cost choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from sklearn.svm import LinearSVC

from invarlab.eval.svm import l2_normalize, voc07_svm, voc_ap


def test_voc_ap_hand_examples() -> None:
    # Ranking N P P: precision 1/2 at the first positive, 2/3 at the second; the envelope lifts the first to
    # 2/3, so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3, while the non-interpolated AP is 1/2 * 1/2 + 1/2 * 2/3.
    scores, labels = [3.0, 2.0, 1.0], [0, 1, 1]
    assert voc_ap(scores, labels) == pytest.approx(2 / 3)
    assert average_precision_score(labels, scores) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # P N P N: precisions 1 and 2/3 already decrease, so both definitions give 1/2 * 1 + 1/2 * 2/3.
    assert voc_ap([4, 3, 2, 1], [1, -1, 1, -1]) == pytest.approx(5 / 6)
    assert voc_ap([1, 2, 3], [1, 1, 1]) == 1.0
    assert math.isnan(voc_ap([1.0, 2.0], [0, -1]))


def _precision_at_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    hit = labels[np.argsort(-scores, kind="stable")] > 0
    return (np.cumsum(hit) / np.arange(1, len(hit) + 1))[hit]


def test_voc_ap_equals_sklearn_when_precision_never_rises_and_exceeds_it_otherwise() -> None:
    rng = np.random.default_rng(0)
    agreeing = 0
    for _ in range(400):
        n = int(rng.integers(2, 30))
        labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        if labels.sum() == 0:
            continue
        scores = rng.permutation(n).astype(float) + labels * rng.uniform(0, 8)  # distinct scores, no ties
        ours, theirs = voc_ap(scores, labels), average_precision_score(labels, scores)
        if np.all(np.diff(_precision_at_hits(scores, labels)) <= 0):
            assert ours == pytest.approx(theirs, abs=1e-12)
            agreeing += 1
        else:
            assert ours > theirs
    assert agreeing > 50  # the agreeing branch was really exercised


def test_l2_normalize_adds_1e_5_to_the_norm() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[3 / (5 + 1e-5), 4 / (5 + 1e-5)], [0.0, 0.0]])


def _multilabel(n: int, d: int, classes: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = rng.random((n, classes)) < 0.3
    feats = present.astype(float) @ rng.normal(size=(classes, d)) + noise * rng.normal(size=(n, d))
    labels = np.where(present, 1, -1)
    difficult = present & (rng.random((n, classes)) < 0.2)
    labels[difficult] = 0
    return feats, labels


def test_protocol_matches_a_direct_sklearn_fit() -> None:
    feats, labels = _multilabel(400, 24, 4, seed=1, noise=1.2)
    tr, te = slice(0, 250), slice(250, None)
    out = voc07_svm(
        torch.as_tensor(feats[tr]) * 7.0,
        torch.as_tensor(labels[tr]),
        feats[te],
        labels[te],
        class_names=list("abcd"),
    )
    for c, name in enumerate("abcd"):
        x_tr = feats[tr] / (np.linalg.norm(feats[tr], axis=1, keepdims=True) + 1e-5)
        x_te = feats[te] / (np.linalg.norm(feats[te], axis=1, keepdims=True) + 1e-5)
        svm = LinearSVC(
            C=0.5,
            class_weight={1: 2, -1: 1},
            loss="squared_hinge",
            dual=True,
            tol=1e-4,
            max_iter=2000,
            random_state=0,
        )
        svm.fit(x_tr, np.where(labels[tr, c] == 1, 1, -1))
        expected = voc_ap(svm.decision_function(x_te), labels[te, c] == 1) * 100
        # Scaling the training features by 7 changed nothing (up to the 1e-5 in the norm).
        assert out["ap"][name] == pytest.approx(expected, abs=0.05)
    assert out["mAP"] == pytest.approx(np.mean(list(out["ap"].values())))
    assert 50 < out["mAP"] < 99


def test_difficult_counts_as_negative_unless_ignored_in_test() -> None:
    feats, labels = _multilabel(300, 16, 3, seed=2, noise=0.3)
    tr, te = slice(0, 200), slice(200, None)
    base = voc07_svm(feats[tr], labels[tr], feats[te], labels[te])
    # Difficult images look like positives, so counting them as negatives costs AP; ignoring them in the test
    # set gives it back.
    ignored = voc07_svm(feats[tr], labels[tr], feats[te], labels[te], ignore_difficult_in_test=True)
    assert ignored["mAP"] > base["mAP"] + 2
    assert ignored["mAP"] > 97


def test_missing_positives_give_nan_and_are_left_out() -> None:
    feats, labels = _multilabel(200, 8, 3, seed=3, noise=0.5)
    labels[:100, 1] = -1  # no positive of class 1 in train
    labels[100:, 2] = -1  # none of class 2 in test
    out = voc07_svm(feats[:100], labels[:100], feats[100:], labels[100:])
    assert math.isnan(out["ap"]["1"]) and math.isnan(out["ap"]["2"])
    assert out["mAP"] == pytest.approx(out["ap"]["0"])


def test_costs_are_chosen_on_validation_only() -> None:
    feats, labels = _multilabel(360, 16, 3, seed=4, noise=1.0)
    tr, va, te = slice(0, 160), slice(160, 260), slice(260, None)
    with pytest.raises(ValueError, match="val_feats"):
        voc07_svm(feats[tr], labels[tr], feats[te], labels[te], costs=(0.01, 0.5))
    out = voc07_svm(
        feats[tr],
        labels[tr],
        feats[te],
        labels[te],
        costs=(1e-4, 0.5),
        val_feats=feats[va],
        val_labels=labels[va],
    )
    assert set(out["cost"]) == {"0", "1", "2"}
    norm = l2_normalize
    for c in range(3):
        val_ap = []
        for cost in (1e-4, 0.5):
            svm = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, dual=True, max_iter=2000, random_state=0)
            svm.fit(norm(feats[tr]), np.where(labels[tr, c] == 1, 1, -1))
            val_ap.append(voc_ap(svm.decision_function(norm(feats[va])), labels[va, c] == 1))
        assert out["cost"][str(c)] == (1e-4, 0.5)[int(np.argmax(val_ap))]
    # Corrupting the test labels cannot change the choice.
    noisy = -labels[te]
    assert (
        voc07_svm(
            feats[tr],
            labels[tr],
            feats[te],
            noisy,
            costs=(1e-4, 0.5),
            val_feats=feats[va],
            val_labels=labels[va],
        )["cost"]
        == out["cost"]
    )


def test_bad_labels_are_named() -> None:
    feats, labels = _multilabel(50, 4, 2, seed=5, noise=0.5)
    with pytest.raises(ValueError, match="only 1"):
        voc07_svm(feats, labels * 2, feats, labels)
    with pytest.raises(ValueError, match="class_names has 3"):
        voc07_svm(feats, labels, feats, labels, class_names=["a", "b", "c"])
