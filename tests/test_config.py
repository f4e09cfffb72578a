from __future__ import annotations

import json

import pytest

from omnivis.config import config_from_dict, config_to_dict
from omnivis.errors import ConfigError
from omnivis.tasks.classify import ClassifyConfig


def test_roundtrip_through_json_including_nested_configs():
    config = ClassifyConfig(model="resnet18", img_size=48)
    config.trainer.epochs = 3
    config.augment.mixup = 0.2
    rebuilt = config_from_dict(ClassifyConfig, json.loads(json.dumps(config_to_dict(config))))
    assert rebuilt == config


def test_typo_names_the_close_match():
    with pytest.raises(ConfigError, match="unknown key 'img_szie'; did you mean 'img_size'"):
        config_from_dict(ClassifyConfig, {"img_szie": 32})
    with pytest.raises(ConfigError, match=r"config.trainer: unknown key 'epoch'; did you mean 'epochs'"):
        config_from_dict(ClassifyConfig, {"trainer": {"epoch": 3}})


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        ClassifyConfig(channels=2)
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict(ClassifyConfig, {"trainer": {"precision": "fp8"}})
