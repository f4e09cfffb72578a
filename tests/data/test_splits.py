"""The one split function gives exactly the splits of the functions it replaced.

Bundles record their split as (val_fraction, seed) and ``omnivis eval`` re-derives the held-out part,
so a changed split would silently evaluate a bundle on its own training data. The ``_old_*``
functions are frozen copies of what the tasks called before (``readers.split_indices``,
``detection.split_records``, ``generate.train.split_data``, segmentation's ``split_indices`` over
zeros); do not edit them.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnivis.data.splits import split_indices
from omnivis.errors import DataError

FRACTIONS = (0.0, 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 1 / 3, 0.3, 0.5, 0.55, 0.7, 0.9, 0.99)
SIZES = (*range(41), 47, 64, 99, 100, 101, 250, 600, 1000)
SEEDS = (0, 1, 42, 2**31 - 1)


def _old_mix_seed(*parts: int) -> int:
    """``data.datamodule.mix_seed`` as documented: SeedSequence over the 32-bit parts, first word >> 1."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)
    return int(state[0]) >> 1


def _old_split_records(num: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(_old_mix_seed(seed, 7919)).permutation(num)
    n_val = int(round(num * val_fraction))  # noqa: RUF046  (frozen copy)
    if val_fraction > 0 and num > 1:
        n_val = min(max(1, n_val), num - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _old_split_indices(labels, val_fraction, seed=0, stratify=True):
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), or 0 for no validation set; got {val_fraction}")
    total = len(labels)
    if val_fraction == 0.0:
        return np.arange(total, dtype=np.int64), np.empty(0, dtype=np.int64)
    if total < 2:
        raise DataError(f"cannot split {total} sample(s) into a training and a validation set")
    _, counts = np.unique(labels, return_counts=True)
    n_val = int(min(max(int(np.ceil(val_fraction * total)), 1), total - 1))
    can_stratify = stratify and len(counts) > 1 and counts.min() >= 2 and len(counts) <= n_val <= total - len(counts)
    train, val = train_test_split(
        np.arange(total), test_size=n_val, stratify=labels if can_stratify else None, random_state=seed
    )
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _old_split_data(labels: np.ndarray, val_fraction: float, seed: int):
    return _old_split_indices(labels, val_fraction, seed=seed, stratify=bool((labels >= 0).all()))


def _same(new, old) -> None:
    np.testing.assert_array_equal(new[0], old[0])
    np.testing.assert_array_equal(new[1], old[1])
    assert new[0].dtype == new[1].dtype == np.int64


def test_the_permutation_seed_is_mix_seed_as_the_old_split_used_it():
    from omnivis.data.splits import _permutation_seed
    from omnivis.seeding import mix_seed

    for seed in (0, 1, 42, 2**31 - 1, 2**40 + 3):
        assert _permutation_seed(seed) == mix_seed(seed, 7919) == _old_mix_seed(seed, 7919)


def test_permutation_method_equals_the_old_detection_split_records():
    checked = 0
    for n in SIZES:
        for fraction in FRACTIONS:
            for seed in SEEDS:
                _same(split_indices(n, fraction, seed, method="permutation"), _old_split_records(n, fraction, seed))
                checked += 1
    assert checked == len(SIZES) * len(FRACTIONS) * len(SEEDS)


def test_default_method_equals_the_old_split_indices_on_labelled_data():
    rng = np.random.default_rng(0)
    for n in (2, 5, 13, 101, 600):
        for classes in (1, 3, 10):
            labels = rng.integers(0, classes, size=n)
            for fraction in (0.0, 0.01, 0.2, 1 / 3, 0.5, 0.9):
                for seed in (0, 7):
                    for stratify in (True, False):
                        _same(split_indices(labels, fraction, seed, stratify), _old_split_indices(labels, fraction, seed, stratify))
    from sklearn.datasets import load_digits

    labels = load_digits().target  # the digits benchmark's split
    _same(split_indices(labels, 0.3, seed=0), _old_split_indices(labels, 0.3, seed=0))


def test_default_method_equals_the_old_generate_split_data():
    """``split_data`` stratified only when every label was known; ``split_indices`` now does so itself."""
    rng = np.random.default_rng(1)
    for n in (4, 9, 40, 200):
        for labels in (rng.integers(0, 3, size=n), np.full(n, -1), np.where(rng.random(n) < 0.3, -1, rng.integers(0, 3, size=n))):
            for fraction in (0.1, 0.2, 0.5):
                for seed in (0, 3):
                    _same(split_indices(labels, fraction, seed), _old_split_data(labels, fraction, seed))


def test_a_count_equals_the_old_segmentation_split_over_zeros():
    for n in (2, 3, 10, 57, 300):
        for fraction in (0.01, 0.2, 1 / 3, 0.5, 0.9):
            for seed in SEEDS:
                old = _old_split_indices(np.zeros(n, dtype=np.int64), fraction, seed=seed, stratify=False)
                _same(split_indices(n, fraction, seed), old)
                _same(split_indices(np.zeros(n, dtype=np.int64), fraction, seed, stratify=False), old)


def test_every_method_partitions_and_checks_its_arguments():
    for method in ("sklearn", "permutation"):
        train, val = split_indices(23, 0.3, seed=5, method=method)
        np.testing.assert_array_equal(np.union1d(train, val), np.arange(23))
        assert len(np.intersect1d(train, val)) == 0 and len(val) >= 1
        for bad in (-0.1, 1.0):
            with pytest.raises(ValueError, match="val_fraction"):
                split_indices(23, bad, method=method)
    with pytest.raises(ValueError, match="unknown split method 'random'"):
        split_indices(23, 0.2, method="random")
    with pytest.raises(DataError):
        split_indices(1, 0.5)
    train, val = split_indices(1, 0.2, method="permutation")  # as detection always did: no held-out record
    assert train.tolist() == [0] and val.size == 0
