"""Distillation: the KD loss, and a student trained from a teacher bundle end to end."""

from __future__ import annotations

import json

import pytest
import torch

from omnivis.data.transforms import AugmentConfig
from omnivis.engine.bundle import load_bundle
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import BundleError, ConfigError
from omnivis.tasks.classify import ClassifyPredictor, train_classifier
from omnivis.tasks.distill import DistillConfig, distill, kd_loss
from tests.conftest import tiny_classify_config


def test_kd_loss_is_zero_when_student_equals_teacher():
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(8, 10), logits, temperature=4.0).item() > 0.01


def test_kd_loss_matches_the_formula():
    s, t, temp = torch.randn(4, 5), torch.randn(4, 5), 2.0
    p_t = (t / temp).softmax(1)
    expected = (p_t * (p_t.log() - (s / temp).log_softmax(1))).sum(1).mean() * temp**2
    assert kd_loss(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)


def _student(teacher, **kw) -> DistillConfig:
    return DistillConfig(
        teacher=str(teacher), model="omnivis_resnet_micro", batch_size=32, val_fraction=0.3,
        augment=AugmentConfig(preset="light", hflip=False), trainer=TrainerConfig(progress=False, **kw),
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return train_classifier(tiny_classify_config(trainer=dict(epochs=2)), tmp_path_factory.mktemp("t") / "teacher")


def test_distill_writes_a_classifier_bundle_and_a_report(teacher, tmp_path):
    out = distill(_student(teacher, epochs=2), tmp_path / "s")
    bundle = load_bundle(out, task="classify")
    assert bundle.config["distilled_from"] == str(teacher)
    assert bundle.config["img_size"] == 16 and bundle.config["in_chans"] == 1  # taken from the teacher
    report = json.loads((out / "distill_report.json").read_text())
    assert report["student_params"] < report["teacher_params"] / 4
    assert report["student_latency_ms"] > 0 and report["teacher_latency_ms"] > 0
    assert report["student_accuracy"] > 0.3  # two epochs with a teacher: well above chance (0.1)
    assert report["teacher_accuracy"] == pytest.approx(load_bundle(teacher).metrics["accuracy"])
    assert (out / "distill_report.md").exists()
    assert len(ClassifyPredictor.from_dir(out).predict([torch.zeros(8, 8).byte().numpy()])) == 1


def test_feature_distillation_trains(teacher, tmp_path):
    config = _student(teacher, max_steps=3)
    config.feature_weight = 1.0
    out = distill(config, tmp_path / "f")
    assert (out / "model.safetensors").exists()


def test_bad_teacher_and_options(tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        DistillConfig()
    with pytest.raises(ConfigError, match="alpha"):
        DistillConfig(teacher="x", alpha=2.0)
    with pytest.raises(BundleError, match="bundle folder not found"):
        distill(_student(tmp_path / "missing", max_steps=1), tmp_path / "o")
