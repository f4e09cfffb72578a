from __future__ import annotations

import random

import numpy as np
import torch

from omnivis.data.builtin import load_builtin
from omnivis.data.datamodule import (
    ImageClassificationDataset,
    epoch_batches,
    set_batch_position,
)
from omnivis.data.transforms import AugmentConfig, build_train_transform
from omnivis.seeding import mix_seed, mix_seeds


def _flatten(batches):
    return [i for batch in batches for (_, i) in batch]


def test_order_is_a_function_of_seed_and_epoch():
    a = epoch_batches(100, 10, train=True, seed=3)
    b = epoch_batches(100, 10, train=True, seed=3)
    a.sampler.set_epoch(2)  # what Lightning calls: batch_sampler.sampler.set_epoch
    b.sampler.set_epoch(2)
    assert list(a) == list(b)
    assert all(epoch == 2 for batch in a for (epoch, _) in batch)
    b.sampler.set_epoch(3)
    assert _flatten(a) != _flatten(b)
    assert sorted(_flatten(a)) == list(range(100))


def test_position_skips_exactly_the_consumed_batches():
    full = epoch_batches(50, 8, train=True, seed=1)
    full.sampler.set_epoch(1)
    expected = list(full)[2:]
    resumed = epoch_batches(50, 8, train=True, seed=1)
    set_batch_position(resumed, len(resumed) + 2)  # epoch 1, two batches done
    resumed.sampler.set_epoch(1)  # Lightning calls this after restoring; the skip must survive it
    assert list(resumed) == expected
    assert len(list(resumed)) == len(full)  # the skip applies once


def test_ranks_partition_the_epoch():
    shards = [epoch_batches(40, 5, train=True, seed=0, rank=r, world_size=2) for r in range(2)]
    seen = [set(_flatten(s)) for s in shards]
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 40
    assert len(shards[0]) == len(shards[1]) == 4


def test_eval_batches_cover_every_sample_in_order():
    batches = epoch_batches(23, 10, train=False)
    assert _flatten(batches) == list(range(23))
    assert len(batches) == 3


def test_augmentation_depends_on_seed_epoch_and_index_only():
    data = load_builtin("digits").subset(np.arange(4))
    tf = build_train_transform(16, (0.5,), (0.5,), AugmentConfig(preset="light", rotation=15))
    dataset = ImageClassificationDataset(data, tf, "L", seed=0)
    first = dataset[(1, 2)][0]
    torch.rand(100)  # advancing the global RNG must not matter
    assert torch.equal(first, dataset[(1, 2)][0])
    assert not torch.equal(first, dataset[(2, 2)][0])
    assert mix_seed(0, 1, 2) != mix_seed(0, 2, 1)


def test_mix_seed_is_numpys_seed_sequence_hash():
    """The plain-Python hash must give numpy's SeedSequence values, or every seeded run changes."""
    rng = random.Random(0)
    for n_parts in range(1, 7):
        for _ in range(500):
            parts = [rng.choice([0, 1, -1, rng.randrange(100), rng.randrange(2**32), rng.randrange(2**64)])
                     for _ in range(n_parts)]
            expected = np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1
            assert mix_seed(*parts) == int(expected), parts


def test_reseed_torch_draws_what_manual_seed_draws():
    from omnivis.seeding import reseed_torch

    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(7)
    reseed_torch(123)
    assert torch.equal(torch.rand(5), expected)


def test_one_cache_limit_covers_training_and_held_out_images():
    """--cache-mb bounds the run's memory: the held-out images get what the training images left."""
    from omnivis.data.cache import cache_datasets

    class Arrays:
        mode = "L"

        def __init__(self, n):
            self.images = [np.full((100, 100), i, np.uint8) for i in range(n)]  # 0.01 MB each

        def sources(self):
            return self.images

    train, held_out, more = Arrays(30), Arrays(30), Arrays(5)
    lines = cache_datasets({"training": train, "held-out": held_out, "more": more}, 0.45, progress=False)
    assert sum(x is not None for x in train.decoded) == 30  # 0.30 MB
    assert sum(x is not None for x in held_out.decoded) == 15  # the 0.15 MB left
    assert more.decoded == [None] * 5 and "fill the cache_mb limit 0.45" in lines[2]
    assert "15 of 30 cached" in lines[1]
    assert all(torch.equal(x, torch.from_numpy(a).unsqueeze(0)) for x, a in zip(train.decoded, train.images))


def test_mix_seeds_gives_mix_seed_for_each_column():
    rng = random.Random(1)
    for n_parts in range(1, 7):
        fixed = [rng.choice([0, -1, rng.randrange(2**32), rng.randrange(2**62)]) for _ in range(n_parts - 1)]
        column = np.array([rng.choice([0, 1, -1, rng.randrange(2**31), rng.randrange(2**62)]) for _ in range(50)])
        assert mix_seeds(*fixed, column) == [mix_seed(*fixed, int(c)) for c in column]
