"""Transfer from a bundle: --init-from, frozen backbone, unfreezing, layer-wise LR decay."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from omnivis.bundle import load_bundle
from omnivis.errors import BundleError, ConfigError
from omnivis.tasks.classify import train_classifier
from tests.conftest import tiny_classify_config


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory):
    return train_classifier(tiny_classify_config(trainer=dict(max_steps=5)), tmp_path_factory.mktemp("src") / "b")


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


def test_frozen_backbone_keeps_every_backbone_tensor(source_bundle, tmp_path):
    config = tiny_classify_config(init_from=str(source_bundle), freeze_backbone=True, trainer=dict(max_steps=6))
    out = train_classifier(config, tmp_path / "frozen")
    before, after = load_file(str(source_bundle / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for key, value in _backbone(before).items():  # weights and batch-norm statistics alike
        assert torch.equal(value, after[key]), key
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert load_bundle(out).config["init_from"] == str(source_bundle)  # the bundle records its origin


def test_unfreeze_after_trains_the_backbone_from_that_epoch(source_bundle, tmp_path):
    config = tiny_classify_config(init_from=str(source_bundle), freeze_backbone=True, unfreeze_after=1,
                                  trainer=dict(epochs=2))
    out = train_classifier(config, tmp_path / "unfrozen")
    before, after = load_file(str(source_bundle / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not torch.equal(before["backbone.model.conv1.weight"], after["backbone.model.conv1.weight"])


class _RecordLRs(Callback):
    def on_train_end(self, trainer, pl_module):
        self.scales = sorted({round(g["initial_lr"], 12) for g in trainer.optimizers[0].param_groups})


def test_layer_decay_gives_earlier_layers_smaller_rates(tmp_path):
    record = _RecordLRs()
    config = tiny_classify_config(model="omnivis_vit_tiny", layer_decay=0.5, trainer=dict(max_steps=1))
    train_classifier(config, tmp_path / "vit", callbacks=[record])
    base = config.lr
    assert record.scales[-1] == pytest.approx(base)
    # timm groups the 4-block ViT into embeddings, blocks and final norm/head: five rates, halving downwards
    assert record.scales == pytest.approx([base * 0.5**i for i in (4, 3, 2, 1, 0)])


def test_incompatible_init_names_both_architectures(source_bundle, tmp_path):
    with pytest.raises(BundleError, match="weights are for backbone 'omnivis_resnet_tiny' but the model is 'omnivis_convnext_tiny'"):
        train_classifier(tiny_classify_config(model="omnivis_convnext_tiny", init_from=str(source_bundle)), tmp_path / "x")
    with pytest.raises(BundleError, match="1 input channels.*with 3 input channels|3 input channels"):
        train_classifier(tiny_classify_config(channels=3, init_from=str(source_bundle)), tmp_path / "y")


def test_bad_transfer_options():
    with pytest.raises(ConfigError, match="unfreeze_after needs freeze_backbone"):
        tiny_classify_config(unfreeze_after=2)
    with pytest.raises(ConfigError, match="layer_decay"):
        tiny_classify_config(layer_decay=0)
