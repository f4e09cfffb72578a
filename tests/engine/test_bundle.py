from __future__ import annotations

import json

import pytest
import torch

from omnivis.engine.bundle import load_bundle, save_bundle
from omnivis.errors import BundleError


def _state():
    return {"layer.weight": torch.randn(3, 4), "layer.bias": torch.zeros(3)}


def test_roundtrip(tmp_path):
    state = _state()
    save_bundle(tmp_path / "b", state, {"task": "classify", "classes": ["a", "b"]}, metrics={"accuracy": 0.5})
    bundle = load_bundle(tmp_path / "b", task="classify")
    assert bundle.config["classes"] == ["a", "b"]
    assert "omnivis_version" in bundle.config
    assert bundle.metrics == {"accuracy": 0.5}
    assert all(torch.equal(state[k], bundle.state_dict[k]) for k in state)
    assert "classify" in (tmp_path / "b" / "README.md").read_text()
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_truncated_weights_are_a_clear_error(tmp_path):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(BundleError, match="model.safetensors: truncated or not a safetensors file"):
        load_bundle(tmp_path)


def test_pickle_posing_as_weights_is_refused(tmp_path):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    torch.save(_state(), tmp_path / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(tmp_path)


def test_pickle_file_instead_of_bundle_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save(_state(), path)
    with pytest.raises(BundleError, match="refusing to unpickle"):
        load_bundle(path)


def test_wrong_task_and_missing_config(tmp_path):
    save_bundle(tmp_path / "b", _state(), {"task": "detect"})
    with pytest.raises(BundleError, match="is a 'detect' bundle"):
        load_bundle(tmp_path / "b", task="classify")
    (tmp_path / "b" / "config.json").write_text(json.dumps({"classes": []}))
    with pytest.raises(BundleError, match="not an omnivis bundle config"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
