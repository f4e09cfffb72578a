"""The one train/validation split every task uses: a function of (labels, fraction, seed), nothing else.

A bundle records its split as ``(val_fraction, seed)`` and ``omnivis eval`` re-derives the held-out
part from those, so a split must never change for the same arguments: ``tests/data/test_splits.py``
compares it with frozen copies of the functions it replaced.
"""

from __future__ import annotations

import numpy as np

from omnivis.errors import DataError

SPLIT_METHODS: tuple[str, ...] = ("sklearn", "permutation")
"""``sklearn``: scikit-learn's ``train_test_split`` (classification, segmentation);
``permutation``: one seeded permutation, cut at ``round(fraction * N)`` (detection and multi-task
bundles were split this way, and re-derive their held-out records with it)."""

_PERMUTATION_STREAM = 7919  # mixed into the seed, so the permutation is not the seed's first draw


def _permutation_seed(seed: int) -> int:
    """``omnivis.seeding.mix_seed(seed, 7919)``, by the definition that function re-implements
    (numpy's ``SeedSequence``). Computed here so that this module needs neither torch nor the engine,
    and so that a split can never change with ``mix_seed``'s implementation."""
    words = [int(seed) & 0xFFFFFFFF, _PERMUTATION_STREAM]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0]) >> 1


def split_indices(
    labels: np.ndarray | int,
    val_fraction: float,
    seed: int = 0,
    stratify: bool = True,
    method: str = "sklearn",
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and validation sets, reproducibly.

    ``sklearn`` (the default) is scikit-learn's ``train_test_split(test_size=n_val,
    stratify=labels, random_state=seed)`` on the indices with ``n_val = ceil(val_fraction * N)``
    (at least 1, at most N - 1), so it matches the splits of papers and baselines that use it (the
    digits benchmark compares against SVC on exactly this split). It stratifies only when every
    sample is labelled (no label < 0) and every class has at least two samples; otherwise the
    indices are shuffled and cut.

    ``permutation`` is ``np.random.default_rng(mix_seed(seed, 7919)).permutation(N)``, the first
    ``round(val_fraction * N)`` (at least 1, at most N - 1 when N > 1 and the fraction is > 0) for
    validation; it never stratifies, and accepts N < 2 (the validation part may then be empty).
    Detection and multi-task bundles recorded their split with it.

    Either depends only on the arguments, never on global random state, so a resumed run and every
    DDP rank agree on it.

    Args:
        labels: integer labels, shape (N,), with -1 (any label < 0) for an unlabelled sample; or N,
            the number of samples, when they have no labels.
        val_fraction: fraction of samples for validation, in [0, 1); 0 gives an empty validation set.
        seed: the split's seed (``random_state`` for ``sklearn``).
        stratify: keep class proportions in both parts when possible (``sklearn`` only).
        method: one of :data:`SPLIT_METHODS`.

    Returns:
        ``(train, val)`` sorted int64 index arrays that partition ``range(N)``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), labels not 1-D, or an unknown ``method``.
        DataError: fewer than two samples to split (``sklearn`` with ``val_fraction`` > 0).
    """
    labels = np.full(int(labels), -1, dtype=np.int64) if isinstance(labels, (int, np.integer)) else np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), or 0 for no validation set; got {val_fraction}")
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; expected one of {', '.join(SPLIT_METHODS)}")
    total = len(labels)
    if method == "permutation":
        order = np.random.default_rng(_permutation_seed(seed)).permutation(total)
        n_val = round(total * val_fraction)
        if val_fraction > 0 and total > 1:
            n_val = min(max(1, n_val), total - 1)
        return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)
    if val_fraction == 0.0:
        return np.arange(total, dtype=np.int64), np.empty(0, dtype=np.int64)
    if total < 2:
        raise DataError(f"cannot split {total} sample(s) into a training and a validation set")
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(labels, return_counts=True)
    n_val = int(min(max(int(np.ceil(val_fraction * total)), 1), total - 1))
    can_stratify = (
        stratify
        and bool((labels >= 0).all())
        and len(counts) > 1
        and counts.min() >= 2
        and len(counts) <= n_val <= total - len(counts)
    )
    train, val = train_test_split(
        np.arange(total), test_size=n_val, stratify=labels if can_stratify else None, random_state=seed
    )
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)
