"""Scoring frozen features: cosine kNN, linear and k-shot linear probes.

Pure functions of feature arrays ``(N, D)`` and integer labels ``(N,)``; they know nothing of models
or images. :mod:`omnivis.tasks.probe` extracts a backbone's features and scores them here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from omnivis.errors import DataError

KNN_TEMPERATURE = 0.07
"""Temperature of the kNN vote weights ``exp(cos / T)``, as in DINO (Caron et al., 2021)."""

LINEAR_MAX_ITER = 5000
"""L-BFGS iterations for the logistic-regression probe: far more than standardized features need."""


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Weighted cosine kNN accuracy, the DINO protocol.

    Features are L2-normalized; each test image's ``k`` most similar training images vote for their
    class with weight ``exp(cos / temperature)`` and the class with the largest total wins, so close
    neighbours count far more than the k-th one.
    """
    train = F.normalize(torch.from_numpy(np.asarray(train_x, np.float32)), dim=1)
    test = F.normalize(torch.from_numpy(np.asarray(test_x, np.float32)), dim=1)
    labels = torch.from_numpy(np.asarray(train_y, np.int64))
    num_classes = int(max(labels.max().item(), int(np.max(test_y)))) + 1
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test), 1024):
        sims, idx = (test[start : start + 1024] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes).scatter_add_(1, labels[idx], (sims / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return float((torch.cat(predictions).numpy() == np.asarray(test_y)).mean())


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Logistic regression (L2, C=1) on features standardized with the fitting rows' statistics."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LINEAR_MAX_ITER))
    classifier.fit(train_x, train_y)
    return float(classifier.score(test_x, test_y))


def kshot_indices(train_y: np.ndarray, shots: int, draw: int, seed: int) -> np.ndarray:
    """``shots`` training rows per class for one draw, from ``np.random.default_rng([seed, draw])``."""
    rng = np.random.default_rng([seed, draw])
    chosen = [rng.choice(np.flatnonzero(train_y == c), shots, replace=False) for c in np.unique(train_y)]
    return np.sort(np.concatenate(chosen))


def check_shots(train_y: np.ndarray, shots: int, classes: Sequence[str]) -> None:
    """Every class needs ``shots`` training images; else a ``DataError`` naming the smallest class."""
    present, counts = np.unique(train_y, return_counts=True)
    if shots > counts.min():
        c = int(present[np.argmin(counts)])
        name = classes[c] if 0 <= c < len(classes) else str(c)
        raise DataError(
            f"shots={shots} is more than class '{name}' has training images ({counts.min()}); "
            f"use shots <= {counts.min()} or a smaller val_fraction"
        )


def evaluate_features(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
    classes: Sequence[str], shots: int | None, draws: int, seed: int, knn_k: int | None,
) -> dict:
    """kNN (unless ``knn_k`` is None), linear and k-shot accuracies of one set of features.

    Raises:
        DataError: ``shots`` is more than the smallest class has training images.
    """
    if shots is not None:
        check_shots(train_y, shots, classes)
    result: dict = {}
    if knn_k is not None:
        result["knn_accuracy"] = knn_accuracy(train_x, train_y, test_x, test_y, knn_k)
    result["linear_accuracy"] = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    if shots is not None:
        accuracies = []
        for draw in range(draws):
            rows = kshot_indices(train_y, shots, draw, seed)
            accuracies.append(linear_probe_accuracy(train_x[rows], train_y[rows], test_x, test_y))
        result.update(
            kshot_accuracy_mean=float(np.mean(accuracies)),
            kshot_accuracy_std=float(np.std(accuracies)),
            kshot_accuracies=accuracies,
        )
    return result
