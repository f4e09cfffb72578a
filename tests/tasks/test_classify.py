"""Classification end to end through the Python API: train, save, reload, predict, evaluate, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from omnivis.bundle import load_bundle
from omnivis.errors import ConfigError, DataError, TrainingError
from omnivis.inference.classify import ClassifyPredictor, evaluate_classifier
from omnivis.tasks.classify import train_classifier
from tests.conftest import tiny_classify_config
from tests.toys import STRIPE_CLASSES, stripe_images, write_stripes


def test_train_save_reload_predict_evaluate(tmp_path):
    # a known answer: the stripes' direction is the class, which any correct training learns; 60 steps
    # (126 images, batch 8, 4 epochs) give 98-100% on every seed tried (chance: 33%)
    data = write_stripes(tmp_path / "stripes", per_class=60)
    config = tiny_classify_config(data=str(data), batch_size=8, trainer=dict(epochs=4))
    out = train_classifier(config, tmp_path / "run")
    bundle = load_bundle(out, task="classify")
    assert bundle.config["classes"] == sorted(STRIPE_CLASSES)  # the class folders, in name order
    assert bundle.config["in_chans"] == 1 and bundle.config["img_size"] == 16
    assert bundle.metrics["accuracy"] >= 0.9 and bundle.metrics["num_samples"] == 54  # 30% of 60 per class
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "logs" / "metrics.csv").exists()
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "checkpoints" / "best.ckpt").exists()

    fresh = stripe_images(10, seed=1)  # new images the model never saw, labels known
    images = [image for image, _ in fresh]
    first = ClassifyPredictor.from_dir(out).predict_proba(images)
    second = ClassifyPredictor.from_dir(out).predict_proba(images)
    assert torch.equal(first, second)
    assert torch.allclose(first.sum(dim=1), torch.ones(30), atol=1e-5)

    results = ClassifyPredictor.from_dir(out).predict(images, top_k=3)
    assert len(results[0]["top_k"]) == 3
    assert results[0]["label"] == results[0]["top_k"][0]["label"]
    right = sum(r["label"] == STRIPE_CLASSES[label] for r, (_, label) in zip(results, fresh))
    assert right >= 27  # 90% of the fresh images, predicted through the reloaded bundle

    metrics = evaluate_classifier(out, progress=False)  # defaults: the bundle's own held-out split
    assert metrics["num_samples"] == 54
    assert metrics["accuracy"] == pytest.approx(bundle.metrics["accuracy"])
    assert sum(row["support"] for row in metrics["per_class"].values()) == 54


def test_predictions_identical_to_the_trained_module(tmp_path):
    config = tiny_classify_config(trainer=dict(max_steps=3))
    out = train_classifier(config, tmp_path / "run")
    state = load_file(str(out / "model.safetensors"))
    predictor = ClassifyPredictor.from_dir(out)
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, state[key])


def test_refuses_to_overwrite_a_run_and_resume_needs_a_checkpoint(tmp_path):
    config = tiny_classify_config(trainer=dict(max_steps=2))
    train_classifier(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a training run"):
        train_classifier(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_classifier(config, tmp_path / "fresh", resume=True)


class _Crash(Callback):
    """Simulates a killed run: dies after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("killed")


def test_resume_matches_an_uninterrupted_run(tmp_path):
    # 1257 training images / batch 32 = 39 steps per epoch, 2 epochs, killed at step 47 (mid-epoch 2);
    # the crash writes last.ckpt and the resumed run must end with bit-identical weights.
    trainer = dict(epochs=2, checkpoint_every_n_steps=5)
    straight = train_classifier(tiny_classify_config(trainer=trainer), tmp_path / "straight")
    with pytest.raises(RuntimeError, match="killed"):
        train_classifier(tiny_classify_config(trainer=trainer), tmp_path / "resumed", callbacks=[_Crash(47)])
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 47
    resumed = train_classifier(tiny_classify_config(trainer=trainer), tmp_path / "resumed", resume=True)
    assert (tmp_path / "resumed" / "logs" / "metrics.part1.csv").exists()  # the first part's log is kept
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _PoisonLoss(Callback):
    """Corrupts the input batch at step 2, as a bad image or an exploding model would."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            batch[0].fill_(float("nan"))


def test_nan_loss_stops_with_the_step_named(tmp_path):
    with pytest.raises(TrainingError, match="loss became nan at step 2"):
        train_classifier(
            tiny_classify_config(trainer=dict(max_steps=5, checkpoint_every_n_steps=1)), tmp_path / "run",
            callbacks=[_PoisonLoss()],
        )
    # the last checkpoint holds finite weights from before the bad step
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_unknown_class_in_eval_data_names_it(tmp_path):
    from PIL import Image

    out = train_classifier(tiny_classify_config(trainer=dict(max_steps=2)), tmp_path / "run")
    for cls in ("3", "dog"):
        (tmp_path / "eval" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "eval" / cls / "a.png")
    with pytest.raises(DataError, match="class 'dog'"):
        evaluate_classifier(out, data=str(tmp_path / "eval"), progress=False)


def test_run_config_is_written(tmp_path):
    out = train_classifier(tiny_classify_config(trainer=dict(max_steps=1)), tmp_path / "run")
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["model"] == "omnivis_resnet_tiny" and run_config["trainer"]["max_steps"] == 1
