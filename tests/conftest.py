"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import logging

import pytest
import torch

from omnivis.data.transforms import AugmentConfig
from omnivis.engine.trainer import TrainerConfig
from omnivis.tasks.classify import ClassifyConfig

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    yield


def tiny_classify_config(**overrides) -> ClassifyConfig:
    """A 16 px grayscale digits classifier that takes a couple of seconds to train."""
    trainer = dict(epochs=1, max_steps=-1, progress=False, seed=0)
    trainer.update(overrides.pop("trainer", {}))
    base = dict(
        data="builtin:digits", model="omnivis_resnet_tiny", img_size=16, channels=1, batch_size=32,
        val_fraction=0.3, augment=AugmentConfig(preset="light", hflip=False),
    )
    base.update(overrides)
    return ClassifyConfig(**base, trainer=TrainerConfig(**trainer))


@pytest.fixture
def tiny_config():
    return tiny_classify_config
