"""Distillation: the KD loss, and a student trained from a teacher bundle end to end."""

from __future__ import annotations

import json

import pytest
import torch

from omnivis.data.transforms import AugmentConfig
from omnivis.bundle import load_bundle
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import BundleError, ConfigError
from omnivis.inference.classify import ClassifyPredictor
from omnivis.tasks.classify import train_classifier
from omnivis.tasks.distill import DistillConfig, distill, kd_loss
from tests.conftest import tiny_classify_config
from tests.toys import write_stripes


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
        teacher=str(teacher), model="omnivis_resnet_micro", batch_size=8, val_fraction=0.3,
        augment=AugmentConfig(preset="light", hflip=False), trainer=TrainerConfig(progress=False, **kw),
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A classifier of stripe directions (a toy with a known answer: 98-100% held out, see test_classify)."""
    root = tmp_path_factory.mktemp("t")
    data = write_stripes(root / "stripes", per_class=60)
    return train_classifier(tiny_classify_config(data=str(data), batch_size=8, trainer=dict(epochs=4)), root / "teacher")


def test_distill_writes_a_classifier_bundle_and_a_report(teacher, tmp_path):
    out = distill(_student(teacher, epochs=4), tmp_path / "s")
    bundle = load_bundle(out, task="classify")
    assert bundle.config["distilled_from"] == str(teacher)
    assert bundle.config["img_size"] == 16 and bundle.config["in_chans"] == 1  # taken from the teacher
    report = json.loads((out / "distill_report.json").read_text())
    assert report["student_params"] < report["teacher_params"] / 4
    assert report["student_latency_ms"] > 0 and report["teacher_latency_ms"] > 0
    # the toy's answer is known: teacher and student reached 100% on every seed tried (0-3; chance: 33%)
    assert report["teacher_accuracy"] == pytest.approx(load_bundle(teacher).metrics["accuracy"])
    assert report["student_accuracy"] == pytest.approx(bundle.metrics["accuracy"])
    assert report["teacher_accuracy"] >= 0.9 and report["student_accuracy"] >= 0.9
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


@pytest.mark.slow
def test_distill_on_two_ddp_processes_writes_the_bundle_once(teacher, tmp_path):
    """Rank 0 alone writes the student's bundle and then reads it back for the report; the other rank
    leaves after training (it used to read a bundle that was not written yet)."""
    from tests.test_cli import omnivis

    out = tmp_path / "ddp"
    omnivis("distill", "--teacher", str(teacher), "--student", "omnivis_resnet_micro", "--max-steps", "3",
            "--batch-size", "16", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress",
            "--out", str(out), "--json")
    bundle = load_bundle(out, task="classify")
    assert bundle.config["distilled_from"] == str(teacher)
    assert json.loads((out / "run_config.json").read_text())["trainer"]["strategy"] == "ddp"
    report = json.loads((out / "distill_report.json").read_text())
    assert report["student_params"] < report["teacher_params"] / 4
    assert report["student_accuracy"] == pytest.approx(bundle.metrics["accuracy"])
