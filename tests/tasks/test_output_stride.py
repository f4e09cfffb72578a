"""``output_stride``: a classifier whose last stages keep stride 8 trains, is recorded in its bundle,
reloads to the same function, and gives saliency maps a grid that can point at something."""

from __future__ import annotations

import pytest
import torch

from omnivis.bundle import load_bundle
from omnivis.errors import ConfigError
from omnivis.inference.classify import ClassifyPredictor
from omnivis.inference.explain import resolve_target_layer
from omnivis.models.backbones import create_backbone
from omnivis.tasks.classify import ClassifyConfig, train_classifier
from tests.conftest import tiny_classify_config
from tests.toys import stripe_images, write_stripes


def test_a_stride_8_classifier_reloads_as_trained_and_learns(tmp_path):
    data = write_stripes(tmp_path / "stripes", per_class=60)
    config = tiny_classify_config(data=str(data), batch_size=8, output_stride=8, trainer=dict(epochs=4))
    out = train_classifier(config, tmp_path / "run")
    bundle = load_bundle(out, task="classify")
    assert bundle.config["output_stride"] == 8
    assert bundle.metrics["accuracy"] >= 0.9  # the stripes' direction is the class (chance 0.33)
    predictor = ClassifyPredictor.from_dir(out)
    features = predictor.model.backbone.model.forward_features(torch.zeros(1, 1, 16, 16))
    assert features.shape[-2:] == (2, 2)  # 16 px at stride 8 (at the default 32: 1 x 1)
    images = [image for image, _ in stripe_images(4, seed=1)]
    assert torch.equal(predictor.predict_proba(images), ClassifyPredictor.from_dir(out).predict_proba(images))


def test_the_default_explained_layer_is_the_last_stage_once_it_is_wide_enough():
    assert resolve_target_layer(create_backbone("omnivis_resnet_tiny", 3), 64).name == "layer2"  # 2 x 2 at layer4
    layer = resolve_target_layer(create_backbone("omnivis_resnet_tiny", 3, output_stride=8), 64)
    assert layer.name == "layer4" and layer.grid == (8, 8)


def test_output_stride_errors_name_the_problem():
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32"):
        ClassifyConfig(output_stride=4)
    with pytest.raises(ConfigError, match="takes no output_stride"):
        create_backbone("omnivis_vit_tiny", 3, img_size=32, output_stride=8)
