"""Face verification and identification figures: ROC, AUC, EER, TAR at a FAR, the 10-fold protocol,
open-set identification, thresholds chosen for a false-accept rate, and figures per group.

Scores are similarities (higher: more alike); a pair is accepted as one person when its score is
``>= threshold``. The ROC and AUC come from torchmetrics; TAR at FAR is a point of the ROC that a
threshold actually reaches, the EER the usual interpolation between the two points around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

from omnivis.errors import DataError
from omnivis.metrics.fairness import gap_and_ratio

FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)


def _unit_range(scores: np.ndarray) -> torch.Tensor:
    """Scores moved into [0, 1] by an increasing map: torchmetrics reads values outside [0, 1] as
    logits and squashes them, which would merge far-apart scores into ties."""
    scores = np.asarray(scores, dtype=np.float64)
    low, high = scores.min(), scores.max()
    return torch.as_tensor((scores - low) / (high - low) if high > low else np.zeros_like(scores))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept rates, true-accept rates), both rising as the threshold falls."""
    fpr, tpr, _ = binary_roc(_unit_range(scores), torch.as_tensor(np.asarray(same, dtype=np.int64)))
    return fpr.double().numpy(), tpr.double().numpy()


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where false accepts and false rejects are equal: the crossing of FAR and 1 - TAR, linearly
    interpolated between the two ROC points around it (the usual definition)."""
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return float(fpr[0])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """The highest true-accept rate of a threshold whose false-accept rate is at most ``far``."""
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_for_far(impostor_scores: np.ndarray, far: float) -> float:
    """The lowest threshold that accepts at most ``far`` of these impostor pairs (``score >= t``).

    With n impostors, k = floor(far * n) of them may be accepted: the threshold sits just above the
    (k+1)-th highest impostor score, so ties never push the rate over ``far``.
    """
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    if not len(scores):
        raise DataError("choosing a threshold needs impostor pairs (photos of at least 2 people)")
    k = int(np.floor(far * len(scores) + 1e-9))
    if k >= len(scores):
        return float(scores[-1])
    return float(np.nextafter(scores[k], np.inf))


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that classifies these pairs best (midpoints between sorted scores)."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    # accuracy of "same iff score >= t" for every candidate at once: genuine above + impostor below
    gen, imp = np.sort(scores[same]), np.sort(scores[~same])
    correct = (len(gen) - np.searchsorted(gen, candidates, side="left")) + np.searchsorted(imp, candidates, side="left")
    return float(candidates[int(np.argmax(correct))])


def fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """The LFW protocol: for each fold, the threshold that is best on the other folds, scored on it;
    (mean, standard deviation) over folds."""
    accuracies = []
    for fold in np.unique(folds):
        train = folds != fold
        threshold = best_accuracy_threshold(scores[train], same[train])
        test = ~train
        accuracies.append(float(np.mean((scores[test] >= threshold) == same[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def verification_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None) -> dict:
    """AUC, EER, TAR at FAR 1e-1/1e-2/1e-3 (with the thresholds), 10-fold accuracy (mean, std)."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise DataError(f"verification figures need both genuine and impostor pairs; these {len(same)} pairs are all "
                        f"{'genuine' if same.all() else 'impostor'}")
    fpr, tpr = roc_curve(scores, same)
    out = {
        "pairs": int(len(same)), "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
        "auc": float(binary_auroc(_unit_range(scores), torch.as_tensor(same.astype(np.int64)))),
        "eer": equal_error_rate(fpr, tpr),
    }
    for far in FARS:
        out[f"tar_at_far_{far:g}"] = tar_at_far(fpr, tpr, far)
        out[f"threshold_at_far_{far:g}"] = threshold_for_far(scores[~same], far)
    if folds is not None and len(np.unique(folds)) > 1:
        out["accuracy_10fold"], out["accuracy_10fold_std"] = fold_accuracy(scores, same, np.asarray(folds))
    return out


def templates(embeddings: torch.Tensor, labels: Sequence) -> tuple[torch.Tensor, list]:
    """One unit vector per identity (labels may be numbers or names): the mean of its unit embeddings,
    renormalized; (T, D) and the identities in sorted order."""
    labels = list(labels)
    people = sorted(set(labels))
    position = {p: i for i, p in enumerate(people)}
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    index = torch.tensor([position[label] for label in labels], dtype=torch.long)
    sums = torch.zeros(len(people), unit.shape[1]).index_add_(0, index, unit)  # one pass, any number of people
    return torch.nn.functional.normalize(sums, dim=1), people


def identification_metrics(gallery: torch.Tensor, gallery_labels: Sequence[int], probes: torch.Tensor,
                           probe_labels: Sequence[int], threshold: float) -> dict:
    """Closed-set top-1/top-5 on the probes whose person is enrolled; open-set precision, recall and F1
    of "known and named right" at ``threshold``, with the probes of people left out of the gallery.

    Precision: of the accepted probes, the share named right; recall: of the enrolled people's
    probes, the share accepted and named right; unknown rejection: of the others, the share rejected.
    """
    temps, people = templates(gallery, gallery_labels)
    sims = torch.nn.functional.normalize(probes.float(), dim=1) @ temps.T
    probe_labels = np.asarray(list(probe_labels))
    known = np.isin(probe_labels, people)
    k = min(5, len(people))
    top = sims.topk(k, dim=1)
    top_people = np.asarray(people)[top.indices.numpy()]
    best_score = top.values[:, 0].numpy()
    hit1 = top_people[:, 0] == probe_labels
    hit5 = (top_people == probe_labels[:, None]).any(axis=1)
    accepted = best_score >= threshold
    right = accepted & hit1
    precision = float(right.sum() / accepted.sum()) if accepted.any() else 0.0
    recall = float(right[known].mean()) if known.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "gallery_people": len(people), "known_probes": int(known.sum()), "unknown_probes": int((~known).sum()),
        "top1_accuracy": float(hit1[known].mean()) if known.any() else 0.0,
        "top5_accuracy": float(hit5[known].mean()) if known.any() else 0.0,
        "open_set_precision": precision, "open_set_recall": recall, "open_set_f1": float(f1),
        "unknown_rejection": float((~accepted[~known]).mean()) if (~known).any() else None,
        "threshold": float(threshold),
    }


def per_group(scores: np.ndarray, same: np.ndarray, first_group: np.ndarray, second_group: np.ndarray,
              folds: np.ndarray | None = None) -> dict:
    """Verification figures within each group (both images of a pair in it), the largest gap (max -
    min) and the ratio (min / max) between groups for each figure; groups without both kinds of pair
    are reported as such and left out of the gaps."""
    groups: dict = {}
    for group in sorted(set(first_group.tolist()) | set(second_group.tolist())):
        inside = (first_group == group) & (second_group == group)
        if same[inside].all() or not same[inside].any():
            groups[group] = {"pairs": int(inside.sum()), "note": "needs genuine and impostor pairs"}
            continue
        groups[group] = verification_metrics(scores[inside], same[inside], None if folds is None else folds[inside])
    # the report shape of every task's --groups (omnivis.metrics.fairness): counts here are pairs
    gaps, ratios = gap_and_ratio(groups, ("auc", "eer", "tar_at_far_0.01", "tar_at_far_0.1"))
    return {"groups": groups, "counts": {g: row["pairs"] for g, row in groups.items()}, "largest_gap": gaps,
            "ratio": ratios}

