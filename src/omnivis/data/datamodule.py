"""Datasets, the epoch batch sampler and the Lightning DataModule every task uses.

Randomness is a function, not a history: the order of an epoch comes from (seed, epoch) and every
augmentation draw from (seed, epoch, sample index). So a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would, and DDP ranks agree on the order without talking.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from omnivis.data.images import array_to_image, load_image
from omnivis.data.readers import ClassificationData
from omnivis.seeding import mix_seed, reseed_torch


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` pairs in an order fixed by (seed, epoch), sharded by rank.

    Wrap it in torch's ``BatchSampler``; Lightning then calls ``set_epoch`` on it every epoch (it
    looks for ``batch_sampler.sampler.set_epoch``). The dataset uses the epoch to seed each sample's
    augmentation. ``skip`` starts an epoch part-way, which is how a resumed run skips the samples
    it already trained on.
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # pad=True: every sample is seen, ranks padded by wrapping; False: the tail is dropped
        self.per_rank = math.ceil(num_samples / world_size) if pad else max(1, num_samples // world_size)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called at every epoch start; a pending resume skip for that same epoch is kept."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.skip = 0

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng(mix_seed(self.seed, self.epoch)).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.per_rank * self.world_size
        if total > len(order):
            order = np.concatenate([order] * math.ceil(total / len(order)))[:total]
        mine = order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        epoch, skip = self.epoch, self.skip
        self.skip = 0  # a resume skip applies once
        return iter([(epoch, int(i)) for i in mine[skip:]])

    def __len__(self) -> int:
        return self.per_rank


def epoch_batches(
    num_samples: int, batch_size: int, *, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1
) -> BatchSampler:
    """Batches of ``(epoch, index)`` pairs: shuffled with equal full batches on every rank for
    training, every sample in order for evaluation."""
    sampler = EpochSampler(num_samples, shuffle=train, seed=seed, rank=rank, world_size=world_size, pad=not train)
    return BatchSampler(sampler, batch_size=min(batch_size, len(sampler)), drop_last=train)


def set_batch_position(batches: BatchSampler, consumed_batches: int) -> None:
    """Make ``batches`` start after ``consumed_batches`` batches (counted over all epochs)."""
    epoch, done = divmod(consumed_batches, len(batches))
    batches.sampler.set_epoch(epoch)
    batches.sampler.skip = done * batches.batch_size


class ImageClassificationDataset(Dataset):
    """``ClassificationData`` as (image tensor, label) pairs, with reproducible augmentation.

    Items are addressed by ``(epoch, index)`` (from ``EpochSampler``) or a plain index.
    """

    def __init__(self, data: ClassificationData, transform: Callable, mode: str = "RGB", seed: int = 0) -> None:
        self.data = data
        self.transform = transform
        self.mode = mode
        self.seed = seed

    def __len__(self) -> int:
        return len(self.data.samples)

    def load(self, index: int):
        """The decoded PIL image of sample ``index`` (files go through the one ``load_image``)."""
        source = self.data.samples[index].source
        if isinstance(source, np.ndarray):
            return array_to_image(source, self.mode)
        return load_image(source, self.mode)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = self.load(index)
        with torch.random.fork_rng(devices=[]):
            reseed_torch(mix_seed(self.seed, epoch, index))
            tensor = self.transform(image)
        return tensor, self.data.samples[index].label


class TensorPairDataset(Dataset):
    """In-memory (images, labels) tensors addressed like ``ImageClassificationDataset``.

    Used for benchmarks and tests that feed the engine pre-made tensors.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = key[1] if isinstance(key, tuple) else key
        return self.images[index], self.labels[index]


class SeededDataModule(pl.LightningDataModule):
    """Train/val/test datasets with ``epoch_batches`` loaders; knows how to resume mid-epoch.

    Rank and world size are read from the trainer when loaders are built (after DDP starts), so the
    same object works on one CPU and on many GPUs.
    """

    def __init__(
        self,
        train: Dataset | None,
        val: Dataset | None = None,
        test: Dataset | None = None,
        *,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        collate_fn: Callable | None = None,
    ) -> None:
        """``collate_fn``: how samples become a batch (None: torch's default stacking; detection
        passes one that keeps per-image targets as a list)."""
        super().__init__()
        self.collate_fn = collate_fn
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._train_batches: BatchSampler | None = None
        self._pending_position: int | None = None

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, batches: BatchSampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
        )

    def set_data_position(self, consumed_batches: int) -> None:
        """Resume the training order after ``consumed_batches`` batches of this rank."""
        self._pending_position = consumed_batches
        if self._train_batches is not None:
            set_batch_position(self._train_batches, consumed_batches)

    def state_dict(self) -> dict:
        """Saved in every checkpoint: how many batches the weights have been trained on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"consumed_batches": int(trainer.global_step * trainer.accumulate_grad_batches)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restored before any loader is built, so the first batch after resume is the right one."""
        if state_dict.get("consumed_batches"):
            self.set_data_position(int(state_dict["consumed_batches"]))

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        self._train_batches = epoch_batches(
            len(self.train_set), self.batch_size, train=True, seed=self.seed, rank=rank, world_size=world
        )
        if self._pending_position is not None:
            set_batch_position(self._train_batches, self._pending_position)
        return self._loader(self.train_set, self._train_batches)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world = self._rank()
        batches = epoch_batches(len(dataset), self.eval_batch_size, train=False, seed=self.seed, rank=rank, world_size=world)
        return self._loader(dataset, batches)

    def val_dataloader(self) -> DataLoader | Sequence:
        return self._eval_loader(self.val_set) if self.val_set is not None and len(self.val_set) else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)
