"""Probing frozen features: toy data with a known answer, k-shot draws, bundles, batch-norm recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from omnivis.data.builtin import load_builtin
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.data.transforms import build_eval_transform
from omnivis.bundle import save_bundle
from omnivis.errors import ConfigError, DataError
from omnivis.models.backbones import create_backbone
from omnivis.tasks.probe import (
    image_batches,
    load_probe_model,
    probe,
    raw_pixel_baseline,
    recalibrate_batchnorm,
)

TINY = {"img_size": 16, "channels": 1}


def _dark_bright(per_class: int = 20, bright: int | None = None) -> ClassificationData:
    """Noisy dark (~40) and bright (~210) 16 x 16 grey squares: any sane feature separates them."""
    rng = np.random.default_rng(0)
    samples = []
    for label, (level, count) in enumerate(((40, per_class), (210, bright or per_class))):
        for i in range(count):
            image = np.clip(level + rng.normal(0, 12, (16, 16)), 0, 255).astype(np.uint8)
            samples.append(ImageSample(image, label, f"{label}/{i}"))
    return ClassificationData(samples, ["dark", "bright"], "toy")


def test_separable_toy_data_probes_perfectly_with_a_random_backbone():
    result = probe("omnivis_resnet_tiny", _dark_bright(), **TINY)
    assert result["knn_accuracy"] == 1.0 and result["linear_accuracy"] == 1.0
    assert result["bn_recalibrated"] is True and result["pretrained"] is False
    assert (result["num_train"], result["num_test"], result["feature_dim"]) == (28, 12, 256)
    assert result["shots"] is None and result["draws"] is None and "kshot_accuracies" not in result


def test_random_labels_probe_near_chance():
    rng = np.random.default_rng(1)
    samples = [
        ImageSample(rng.integers(0, 256, (16, 16), dtype=np.uint8), int(rng.integers(2)), f"n/{i}") for i in range(120)
    ]
    result = probe("omnivis_resnet_tiny", ClassificationData(samples, ["a", "b"], "noise"), **TINY)
    assert 0.2 <= result["knn_accuracy"] <= 0.8
    assert 0.2 <= result["linear_accuracy"] <= 0.8


def test_kshot_draws_are_reported_and_deterministic():
    first = probe("omnivis_resnet_tiny", _dark_bright(), shots=3, draws=4, seed=7, **TINY)
    again = probe("omnivis_resnet_tiny", _dark_bright(), shots=3, draws=4, seed=7, **TINY)
    assert len(first["kshot_accuracies"]) == 4 and (first["shots"], first["draws"]) == (3, 4)
    assert first["kshot_accuracies"] == again["kshot_accuracies"]
    assert first["kshot_accuracy_mean"] == pytest.approx(np.mean(first["kshot_accuracies"]))
    assert first["kshot_accuracy_std"] == pytest.approx(np.std(first["kshot_accuracies"]))


def test_more_shots_than_the_smallest_class_names_it():
    data = _dark_bright(per_class=20, bright=10)  # 'bright' keeps 7 training images after the split
    with pytest.raises(DataError, match=r"class 'bright' has training images \(7\)"):
        probe("omnivis_resnet_tiny", data, shots=8, **TINY)


def test_unlabeled_or_single_class_data_is_refused():
    image = np.zeros((16, 16), np.uint8)
    unlabeled = ClassificationData([ImageSample(image, -1, f"u/{i}") for i in range(6)], [], "unlabeled")
    with pytest.raises(DataError, match="no labelled images"):
        probe("omnivis_resnet_tiny", unlabeled, **TINY)
    single = ClassificationData([ImageSample(image, 0, f"s/{i}") for i in range(6)], ["only"], "single")
    with pytest.raises(DataError, match="at least 2 classes"):
        raw_pixel_baseline(single)


def test_a_bundle_supplies_backbone_channels_and_size(tmp_path):
    backbone = create_backbone("omnivis_resnet_tiny", in_chans=1)
    state = {f"backbone.model.{k}": v for k, v in backbone.model.state_dict().items()}
    state.update({"head.1.weight": torch.zeros(2, 256), "head.1.bias": torch.zeros(2)})
    config = {"task": "classify", "backbone": "omnivis_resnet_tiny", "in_chans": 1, "img_size": 16,
              "mean": [0.5], "std": [0.5], "classes": ["dark", "bright"]}
    bundle = save_bundle(tmp_path / "bundle", state, config)
    result = probe(str(bundle), _dark_bright())
    assert result["pretrained"] is True and (result["channels"], result["img_size"]) == (1, 16)
    assert result["zero_init_scales_reset"] == 0  # trained weights are never touched
    assert result["linear_accuracy"] == 1.0
    with pytest.raises(ConfigError, match="channels=1"):
        probe(str(bundle), _dark_bright(), channels=3)


def test_batchnorm_recalibration_updates_running_statistics():
    digits = load_builtin("digits").subset(range(200))
    model = load_probe_model("omnivis_resnet_tiny", img_size=16, channels=1)
    layers = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    transform = build_eval_transform(16, model.mean, model.std)
    sources = [s.source for s in digits.samples]
    assert recalibrate_batchnorm(model.backbone, image_batches(sources, "L", transform, 128, min_batch=2))
    assert not torch.equal(layers[0].running_mean, torch.zeros_like(layers[0].running_mean))
    assert not torch.equal(layers[0].running_var, torch.ones_like(layers[0].running_var))
    assert all(m.momentum == 0.1 and not m.training for m in layers)  # restored


def test_recalibration_lifts_a_random_resnet_on_digits():
    digits = load_builtin("digits").subset(range(300))
    recalibrated = probe("omnivis_resnet_tiny", digits, **TINY)
    plain = probe("omnivis_resnet_tiny", digits, recalibrate_bn=False, **TINY)
    assert recalibrated["bn_recalibrated"] and not plain["bn_recalibrated"]
    assert recalibrated["zero_init_scales_reset"] == 4  # one per residual block of the tiny ResNet
    assert recalibrated["knn_accuracy"] > 0.5 and recalibrated["linear_accuracy"] > 0.5  # chance: 0.1
    assert recalibrated["knn_accuracy"] > plain["knn_accuracy"]


def test_raw_pixel_baseline_on_digits():
    result = raw_pixel_baseline("builtin:digits", val_fraction=0.3, seed=0, shots=10, draws=5)
    assert (result["num_train"], result["num_test"], result["feature_dim"]) == (1257, 540, 64)
    assert len(result["kshot_accuracies"]) == 5
    assert 0.7 <= result["kshot_accuracy_mean"] <= 1.0
    assert 0.7 <= result["linear_accuracy"] <= 1.0
