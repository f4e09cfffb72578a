"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import logging
import os

# OpenMP threads spin-wait by default; on a loaded 2-core machine that froze a tiny model's step from
# 0.12 s to 3-7 s. Set before torch loads its OpenMP runtime; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A .safetensors file with the FID Inception-v3's keys and shapes and random (He-scaled) weights.

    The real file cannot be downloaded here; the loading path, the architecture and the metric plumbing
    are what the tests check, not the published numbers.
    """
    from unittest import mock

    import safetensors.torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # build the architecture without its weight loading (which would download them)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "inception.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path
