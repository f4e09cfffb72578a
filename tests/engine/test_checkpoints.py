"""Epoch-end ``last.ckpt``: throttled by ``checkpoint_min_interval_s``, always written after the final epoch."""

from __future__ import annotations

import pytest
import torch

from omnivis.engine.trainer import LastCheckpoint, TrainerConfig
from omnivis.errors import ConfigError
from omnivis.tasks.classify import train_classifier
from tests.conftest import tiny_classify_config


@pytest.mark.parametrize("interval,expected_saves", [(0.0, 3), (3600.0, 1)])
def test_epoch_end_checkpoints_respect_the_minimum_interval(tmp_path, monkeypatch, interval, expected_saves):
    saved_steps = []
    original = LastCheckpoint._save_checkpoint

    def counting(self, trainer, filepath):
        saved_steps.append(trainer.global_step)
        original(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", counting)
    # 10% of digits for training: 6 batches per epoch, 3 short epochs
    config = tiny_classify_config(val_fraction=0.9, trainer=dict(epochs=3, checkpoint_min_interval_s=interval))
    out = train_classifier(config, tmp_path / "run")
    assert len(saved_steps) == expected_saves
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == saved_steps[-1] and final["epoch"] == 2  # the last epoch is always kept


def test_negative_interval_is_a_config_error():
    with pytest.raises(ConfigError, match="checkpoint_min_interval_s"):
        TrainerConfig(checkpoint_min_interval_s=-1)
