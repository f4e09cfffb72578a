"""Face figures against scikit-learn and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from omnivis.metrics.face import (
    fold_accuracy,
    identification_metrics,
    per_group,
    threshold_for_far,
    verification_metrics,
)


def synthetic_scores(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.15
    return rng.normal(np.where(same, 1.2, 0.0), 1.0), same


def test_verification_figures_match_scikit_learn():
    scores, same = synthetic_scores()
    got = verification_metrics(scores, same, np.arange(len(same)) % 10)
    fpr, tpr, _ = roc_curve(same, scores)
    assert got["auc"] == pytest.approx(roc_auc_score(same, scores), abs=1e-6)
    for far in (0.1, 0.01, 0.001):
        assert got[f"tar_at_far_{far:g}"] == pytest.approx(tpr[fpr <= far].max(), abs=1e-6)
    # EER: between the two ROC points where false accepts overtake false rejects
    fnr = 1 - tpr
    i = int(np.argmax(fpr >= fnr))
    assert min(fpr[i - 1], fnr[i]) - 1e-9 <= got["eer"] <= max(fpr[i], fnr[i - 1]) + 1e-9
    assert got["genuine_pairs"] + got["impostor_pairs"] == len(same)


def test_separable_scores_give_perfect_figures():
    same = np.array([True] * 20 + [False] * 80)
    scores = np.where(same, 0.9, 0.1) + np.linspace(0, 0.05, 100)
    got = verification_metrics(scores, same, np.arange(100) % 10)
    assert got["auc"] == 1.0 and got["eer"] == 0.0 and got["tar_at_far_0.01"] == 1.0
    assert got["accuracy_10fold"] == 1.0 and got["accuracy_10fold_std"] == 0.0


@pytest.mark.parametrize("far", [0.1, 0.01, 0.003])
def test_threshold_holds_the_requested_false_accept_rate(far):
    impostors = np.random.default_rng(1).normal(size=5000)
    t = threshold_for_far(impostors, far)
    measured = float(np.mean(impostors >= t))
    assert measured <= far and measured >= far - 1.0 / len(impostors)


def test_threshold_with_ties_never_exceeds_the_rate():
    impostors = np.array([0.5] * 50 + [0.1] * 50)
    t = threshold_for_far(impostors, 0.1)
    assert np.mean(impostors >= t) <= 0.1


def test_ten_fold_accuracy_picks_each_threshold_on_the_other_folds():
    scores, same = synthetic_scores(600, seed=2)
    folds = np.arange(600) % 10
    mean, std = fold_accuracy(scores, same, folds)
    brute = []
    for f in range(10):
        train = folds != f
        candidates = np.unique(scores)
        accs = [np.mean((scores[train] >= c) == same[train]) for c in candidates]
        best = candidates[int(np.argmax(accs))]
        # any threshold in (previous score, best] classifies the training folds the same; compare on the fold
        brute.append(np.mean((scores[~train] >= best) == same[~train]))
    assert mean == pytest.approx(np.mean(brute), abs=0.02)
    assert 0 <= std < 0.2


def test_identification_known_answer():
    eye = torch.eye(4)
    gallery = torch.cat([eye[:3], eye[:3]])  # people 0, 1, 2 enrolled twice each; 3 is not enrolled
    probes = torch.stack([eye[0], eye[1] * 0.9 + eye[2] * 0.1, eye[3], eye[2]])
    got = identification_metrics(gallery, [0, 1, 2, 0, 1, 2], probes, [0, 1, 3, 1], threshold=0.5)
    assert got["top1_accuracy"] == pytest.approx(2 / 3)  # the last probe is person 2's face labelled 1
    assert got["unknown_rejection"] == 1.0
    assert got["open_set_precision"] == pytest.approx(2 / 3)
    assert got["open_set_recall"] == pytest.approx(2 / 3)


def test_per_group_reports_the_largest_gap():
    scores, same = synthetic_scores(2000, seed=3)
    groups = np.where(np.arange(2000) < 1000, "a", "b")
    scores[1000:] = np.where(same[1000:], 3.0, 0.0)  # group b separates perfectly
    got = per_group(scores, same, groups, groups)
    assert got["groups"]["b"]["auc"] == 1.0 and got["groups"]["a"]["auc"] < 0.9
    assert got["largest_gap"]["auc"] == pytest.approx(1.0 - got["groups"]["a"]["auc"])
