"""Self-supervised pretraining end to end: every method learns, and its bundle initializes other tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image
from safetensors.torch import load_file

from omnivis.data.builtin import load_builtin
from omnivis.engine.bundle import load_bundle
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import ConfigError
from omnivis.models.backbones import create_backbone
from omnivis.tasks.pretrain import PretrainConfig, build_views, pretrain


class LossRecorder(Callback):
    """Collects the loss of every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


class StopAfter(Callback):
    """Ends training after ``steps`` optimizer steps while the schedules run for the configured length."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def tiny_pretrain_config(method: str, steps: int, **overrides) -> PretrainConfig:
    """256 digits at 16 px, grayscale, batch 32: a few seconds per method on 2 CPU cores."""
    base = {
        "method": method, "data": "builtin:digits", "max_images": 256, "img_size": 16, "channels": 1, "batch_size": 32,
        "warmup_epochs": 0.0, "hflip": False,
    }
    base.update(overrides)
    trainer = TrainerConfig(epochs=100, max_steps=steps, progress=False, seed=0, log_every_n_steps=1)
    return PretrainConfig(**base, trainer=trainer)


# Per method: settings, steps, and the factor the mean of the last 5 losses must stay under, relative
# to the first 5 (single-batch losses are noisy, so means of 5 are compared). Chance levels: simclr log(2B-1) = 4.14 (t=0.5 scale), rotation log(4) = 1.39.
# dino: with a fast teacher (momentum 0.9) the student first learns to match the teacher's sharpened
# output; over longer tiny runs the centring flattens the teacher again (the loss climbs back towards
# log(1024) = 6.93), so a 32-step schedule is stopped after its first 10 steps.
CASES = {
    "simclr": ({"temperature": 0.2, "crop_scale": 0.6, "lr": 2e-3}, 40, 40, 0.95),
    "dino": ({"momentum": 0.9, "lr": 2e-3}, 32, 10, 0.75),
    "rotation": ({"lr": 2e-3}, 24, 24, 0.85),
    "mae": ({"lr": 2e-3}, 24, 24, 0.85),
}


@pytest.mark.parametrize("method", list(CASES))
def test_method_learns_and_bundle_initializes_a_backbone(tmp_path, method):
    overrides, schedule_steps, steps, factor = CASES[method]
    config = tiny_pretrain_config(method, schedule_steps, **overrides)
    recorder = LossRecorder()
    out = pretrain(config, tmp_path / "run", callbacks=[recorder, StopAfter(steps)])

    losses = recorder.losses
    assert len(losses) == steps and all(np.isfinite(losses))
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    print(f"{method}: first-5 mean {first:.4f} -> last-5 mean {last:.4f}")
    assert last < factor * first, f"{method} did not learn: {first:.4f} -> {last:.4f} ({losses})"

    bundle = load_bundle(out, task="pretrain")
    cfg = bundle.config
    assert cfg["method"] == method and cfg["backbone"] == config.model
    assert cfg["in_chans"] == 1 and cfg["img_size"] == 16 and cfg["mean"] == [0.5] and cfg["std"] == [0.5]
    assert cfg["data"] == "builtin:digits" and "omnivis_version" in cfg

    # the backbone is stored under exactly create_backbone(...).model's keys, prefixed
    fresh = create_backbone(config.model, in_chans=1, img_size=16)
    expected = {f"backbone.model.{k}" for k in fresh.model.state_dict()}
    stored = {k for k in bundle.state_dict if k.startswith("backbone.model.")}
    assert stored == expected
    # ... so --init-from loads it with nothing missing, and the weights are the bundle's
    loaded = create_backbone(config.model, in_chans=1, pretrained=out, img_size=16)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, bundle.state_dict[f"backbone.model.{key}"]), key
    # pretraining changed the weights (for dino the exported teacher moved with the student)
    assert any(not torch.equal(v, fresh.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["steps"] == steps
    assert metrics["train_loss"] == pytest.approx(losses[-1], rel=1e-5)
    assert metrics["num_images"] == 256
    picture = out / ("reconstructions.png" if method == "mae" else "embeddings.png")
    assert picture.stat().st_size > 2000
    assert Image.open(picture).format == "PNG"
    if method == "mae":
        assert metrics["mask_ratio"] == 0.75
        # 16 patches of 4 x 4 px at 16 px: int(16 * 0.25) = 4 kept, 12 masked
        assert metrics["mask_ratio_realized"] == pytest.approx(0.75)
    if method == "simclr":
        assert metrics["temperature"] == 0.2
    assert (out / "README.md").read_text().startswith("# omnivis pretrained backbone")
    assert (out / "logs" / "metrics.csv").read_text().splitlines()[0].count("train/loss") == 1


def test_mae_refuses_a_cnn_backbone_before_reading_data(tmp_path):
    config = PretrainConfig(method="mae", model="omnivis_resnet_tiny", trainer=TrainerConfig(max_steps=1, progress=False))
    with pytest.raises(ConfigError, match="mae needs a ViT.*'omnivis_resnet_tiny'"):
        pretrain(config, tmp_path / "run")
    assert not (tmp_path / "run" / "run_config.json").exists()


def test_config_defaults_and_validation():
    assert PretrainConfig(method="mae").model == "omnivis_vit_tiny"
    assert PretrainConfig(method="dino").model == "omnivis_resnet_tiny"
    with pytest.raises(ConfigError, match="unknown pretraining method 'simclrr'"):
        PretrainConfig(method="simclrr")
    with pytest.raises(ConfigError, match="mask_ratio"):
        PretrainConfig(method="mae", mask_ratio=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        PretrainConfig(temperature=0.0)


def test_views_are_a_function_of_the_seed():
    """Views draw only from torch's RNG: reseeding gives the same views, rotations included."""
    image = Image.fromarray(load_builtin("digits").samples[0].source)
    for method in ("simclr", "dino", "rotation"):
        views = build_views(PretrainConfig(method=method, img_size=16, channels=1, local_crops=2), (0.5,), (0.5,))
        torch.manual_seed(3)
        first = views(image)
        torch.manual_seed(3)
        second = views(image)
        for a, b in zip(first, second):
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
        if method == "simclr":
            assert not torch.equal(first[0], first[1])  # two different views of one image
        if method == "dino":
            assert [tuple(v.shape) for v in first] == [(1, 16, 16)] * 2 + [(1, 8, 8)] * 2


def test_unlabeled_folder_with_a_corrupt_file(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, sample in enumerate(load_builtin("digits").samples[:12]):
        Image.fromarray(sample.source).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    config = PretrainConfig(
        method="rotation", data=str(folder), img_size=16, channels=1, batch_size=4,
        trainer=TrainerConfig(max_steps=2, progress=False, seed=0),
    )
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        out = pretrain(config, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 12 and metrics["skipped_images"] == 1
    assert (out / "embeddings.png").stat().st_size > 2000  # unlabeled points, no legend
    assert set(load_file(str(out / "model.safetensors"))) >= {"rotation_head.weight", "rotation_head.bias"}
