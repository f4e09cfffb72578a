"""Poisson-sampled training batches, the sampling differential privacy's accounting assumes.

DP-SGD's privacy amplification by subsampling holds when every step includes each training image
independently with probability ``q`` (batches vary in size, and may be empty), not for a shuffled
pass of fixed-size batches. Opacus' own ``DPDataLoader`` draws from one generator that advances
with the run, so a resumed run would see other batches and every epoch the same augmentation; here
a step's batch is a function of (seed, epoch, step), like every other order in omnivis, and the
items are ``(epoch, index)`` pairs so augmentation keeps changing with the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, default_collate

from omnivis.data.datamodule import SeededDataModule
from omnivis.seeding import mix_seed


class PoissonBatches:
    """``steps`` batches an epoch; each holds every image independently with probability ``sample_rate``.

    ``sample_rate`` is ``batch_size / num_samples`` (so ``batch_size`` is the expected size) and an
    epoch has ``num_samples // batch_size`` steps, the same count as the fixed-size loader, so the
    schedule, the learning rate and ``--max-steps`` mean the same with and without privacy.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0) -> None:
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        batch_size = min(batch_size, num_samples)
        self.num_samples = num_samples
        self.sample_rate = batch_size / num_samples
        self.steps = max(1, num_samples // batch_size)
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start; a pending resume skip for that epoch is kept."""
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def set_position(self, consumed_batches: int) -> None:
        """Start after ``consumed_batches`` steps (counted over all epochs), for ``--resume``."""
        self.epoch, self.skip = divmod(consumed_batches, self.steps)

    def batch(self, epoch: int, step: int) -> list[tuple[int, int]]:
        """The ``(epoch, index)`` pairs of one step: a Bernoulli(``sample_rate``) draw per image."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, step))
        chosen = torch.rand(self.num_samples, generator=generator) < self.sample_rate
        return [(epoch, int(i)) for i in chosen.nonzero().flatten()]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = self.epoch, self.skip
        self.skip = 0  # a resume skip applies once
        for step in range(skip, self.steps):
            yield self.batch(epoch, step)

    def __len__(self) -> int:
        return self.steps


class EmptySafeCollate:
    """torch's default collate, and for an empty draw the same structure with zero rows."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self._empty = None

    def __call__(self, items: list):
        if items:
            return default_collate(items)
        if self._empty is None:
            example = default_collate([self.dataset[0]])
            self._empty = [part[:0] for part in example]
        return list(self._empty)


class PoissonDataModule(SeededDataModule):
    """``SeededDataModule`` whose training batches are ``PoissonBatches`` (validation is unchanged)."""

    def set_data_position(self, consumed_batches: int) -> None:
        self._pending_position = consumed_batches
        if self._train_batches is not None:
            self._train_batches.set_position(consumed_batches)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        if world > 1:  # each rank would draw its own batch: the accounting assumes one
            raise RuntimeError("Poisson-sampled (differentially private) training runs on one device")
        self._train_batches = PoissonBatches(len(self.train_set), self.batch_size, seed=self.seed)
        if self._pending_position is not None:
            self._train_batches.set_position(self._pending_position)
        return DataLoader(self.train_set, batch_sampler=self._train_batches, num_workers=self.num_workers,
                          collate_fn=EmptySafeCollate(self.train_set), persistent_workers=self.num_workers > 0)


def poisson_datamodule(datamodule: SeededDataModule) -> PoissonDataModule:
    """The same datasets, batch size, workers and seed, with Poisson-sampled training batches."""
    return PoissonDataModule(datamodule.train_set, datamodule.val_set, datamodule.test_set,
                             batch_size=datamodule.batch_size, eval_batch_size=datamodule.eval_batch_size,
                             num_workers=datamodule.num_workers, seed=datamodule.seed)
