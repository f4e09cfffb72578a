"""Datasets and the epoch sampler every task's loader uses; torch only, no Lightning.

Randomness is a function, not a history: the order of an epoch comes from (seed, epoch) and every
augmentation draw from (seed, epoch, sample index). So a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would, and DDP ranks agree on the order without talking.
Evaluation and sampling read images through these without importing the training engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, Sampler

from omnivis.data.decode import decode_tensor
from omnivis.data.readers import ClassificationData
from omnivis.data.transforms import RandomResizedCropFlip, StagedTransform
from omnivis.seeding import mix_seed, mix_seeds, reseed_torch


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

    Items are addressed by ``(epoch, index)`` (from ``EpochSampler``) or a plain index. Images are
    (C, H, W) uint8 tensors from ``decode_tensor``, taken from ``decoded`` when ``cache_decoded``
    filled it; ``transform`` (transforms v2) turns one into the model's input.
    """

    def __init__(self, data: ClassificationData, transform: Callable, mode: str = "RGB", seed: int = 0) -> None:
        self.data = data
        self.transform = transform
        self.mode = mode
        self.seed = seed
        self.decoded: list[torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return len(self.data.samples)

    def sources(self) -> list:
        return [sample.source for sample in self.data.samples]

    def load(self, index: int) -> torch.Tensor:
        """Sample ``index`` as a (C, H, W) uint8 tensor in ``mode``: cached, or decoded now."""
        if self.decoded is not None and self.decoded[index] is not None:
            return self.decoded[index]
        return decode_tensor(self.data.samples[index].source, self.mode)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        """A batch's samples at once (torch's ``DataLoader`` calls this instead of ``__getitem__``
        per sample): the same tensors, with one RNG fork and one seed computation for the batch, the
        random resized crops of same-sized images made as one batched resize
        (``RandomResizedCropFlip.apply``), and a ``StagedTransform``'s elementwise finish run once on
        the stacked images. On 28-px digits the loader spends ~2 ms a batch instead of ~12 ms, and
        on 2 cores it runs in series with the model."""
        staged = isinstance(self.transform, StagedTransform)
        per_image = self.transform.geometry if staged else self.transform
        pairs = [key if isinstance(key, tuple) else (0, key) for key in keys]
        epochs, indices = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
        loaded = [self.load(index) for _, index in pairs]
        labels = [self.data.samples[index].label for _, index in pairs]
        shapes = {tuple(image.shape) for image in loaded}
        batched = (isinstance(per_image, RandomResizedCropFlip) and len(shapes) == 1
                   and per_image.batchable(*loaded[0].shape[-2:]))
        with torch.random.fork_rng(devices=[]):
            images = []
            for image, seed in zip(loaded, mix_seeds(self.seed, epochs, indices)):
                reseed_torch(seed)
                images.append(per_image.draw(*image.shape[-2:]) if batched else per_image(image))
        if batched:  # ``images`` holds each image's draw: the batch is cropped and resized in one go
            images = list(per_image.apply(torch.stack(loaded), images))
        if staged:
            if len({tuple(image.shape) for image in images}) == 1:
                images = list(self.transform.finish(torch.stack(images)).unbind(0))
            else:
                images = [self.transform.finish(image) for image in images]
        return list(zip(images, labels))


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
