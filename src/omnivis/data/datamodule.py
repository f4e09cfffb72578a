"""The Lightning DataModule every task uses (datasets and the epoch sampler: ``datasets.py``).

Randomness is a function, not a history: the order of an epoch comes from (seed, epoch) and every
augmentation draw from (seed, epoch, sample index). So a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would, and DDP ranks agree on the order without talking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl
from torch.utils.data import BatchSampler, DataLoader, Dataset

from omnivis.data.cache import loader_workers
from omnivis.data.datasets import (  # noqa: F401  (re-exported: the data API tasks import)
    EpochSampler,
    ImageClassificationDataset,
    TensorPairDataset,
    epoch_batches,
    set_batch_position,
)


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
        num_workers: int = -1,
        seed: int = 0,
        collate_fn: Callable | None = None,
    ) -> None:
        """``collate_fn``: how samples become a batch (None: torch's default stacking; detection
        passes one that keeps per-image targets as a list). ``num_workers`` -1: chosen from the
        data's size, its cache and the cores (``data.cache.loader_workers``)."""
        super().__init__()
        self.collate_fn = collate_fn
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = loader_workers(num_workers, (train, val, test))
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
