"""Knowledge distillation: a small classifier learns from a trained classifier bundle.

The student is an ordinary classifier (the result is a ``classify`` bundle, usable everywhere a
classifier is); training adds the teacher's softened logits (Hinton et al., 2015) and, optionally, a
match of pooled features through a learned projection. The report compares teacher and student on
the same held-out split: accuracy, parameters and CPU latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.data.builtin import resolve_classification_data
from omnivis.data.splits import split_indices
from omnivis.bundle import load_bundle
from omnivis.errors import ConfigError
from omnivis.fileio import atomic_write_bytes
from omnivis.inference.classify import ClassifyPredictor, evaluate_classifier
from omnivis.metrics.report import write_json
from omnivis.models.heads import ImageClassifier
from omnivis.tasks.classify import (
    SUMMARY_KEYS,
    ClassifyConfig,
    ClassifyModule,
    classify_plan,
)
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.run import TrainingPlan, run_training

__all__ = ["DistillConfig", "DistillModule", "distill", "kd_loss", "cpu_latency_ms"]


@dataclass(kw_only=True)
class DistillConfig(ClassifyConfig):
    """A classification run (the student's recipe) plus the teacher and the distillation weights.

    The student sees exactly the teacher's input: ``img_size`` and ``channels`` come from the teacher
    bundle, and so does the training data unless ``data`` is given.

    Attributes:
        teacher: a ``classify`` bundle folder.
        data: training data with the teacher's classes (empty: the teacher's training data and manifest).
        model: the student's backbone: any timm name or omnivis preset (``omnivis models list``).
        val_fraction: held-out fraction on which teacher and student are compared (stratified,
            fixed by ``trainer.seed``).
        temperature: softmax temperature for both sets of logits.
        alpha: weight of the distillation term; ``1 - alpha`` weights cross-entropy on the labels.
        feature_weight: weight of the pooled-feature MSE through a learned projection (0: off).
    """

    data: str = ""  # empty: the teacher's training data (and manifest)
    model: str = "omnivis_resnet_micro"
    val_fraction: float = 0.3
    lr: float = 3e-3
    teacher: str = ""
    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ConfigError("distillation needs a teacher bundle")
        if self.dp_epsilon is not None:
            raise ConfigError("a distilled student learns from a teacher that saw the data, so it is not private; "
                              "train it with omnivis train classify --dp-epsilon instead")
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0 or self.feature_weight < 0:
            raise ConfigError("temperature must be > 0, alpha in [0, 1] and feature_weight >= 0")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 so gradients keep
    their size as T changes. (B, C), (B, C) -> scalar; zero when the logits are equal."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


class DistillModule(ClassifyModule):
    """ClassifyModule whose loss mixes label cross-entropy with the teacher's soft targets."""

    def __init__(self, config: DistillConfig, classes: Sequence[str], teacher: ImageClassifier) -> None:
        super().__init__(config, classes)
        self.teacher = teacher.eval().requires_grad_(False)
        self.projection = (
            nn.Linear(self.model.backbone.num_features, teacher.backbone.num_features)
            if config.feature_weight else None
        )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.teacher.eval()  # Lightning sets every submodule to train mode each epoch

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.batch_mix is not None:
            images, labels = self.batch_mix(images, labels)
        cfg: DistillConfig = self.config  # type: ignore[assignment]
        with torch.no_grad():
            teacher_features = self.teacher.backbone.forward_pooled(images)
            teacher_logits = self.teacher.head(teacher_features)
        features = self.model.backbone.forward_pooled(images)
        logits = self.model.head(features)
        ce = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        kd = kd_loss(logits, teacher_logits, cfg.temperature)
        loss = cfg.alpha * kd + (1 - cfg.alpha) * ce
        if self.projection is not None:
            loss = loss + cfg.feature_weight * F.mse_loss(self.projection(features), teacher_features)
        log_training(self, {"train/loss": loss, "train/kd": kd, "train/ce": ce}, prog_bar=("train/loss", "train/kd", "train/ce"))
        return loss

    def configure_optimizers(self) -> dict:
        if self.projection is None:
            return super().configure_optimizers()
        # the projection trains with the student: optimize both through one wrapper module
        both = nn.ModuleList([self.model, self.projection])
        return warmup_cosine_for(self, both, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


def cpu_latency_ms(model: nn.Module, in_chans: int, img_size: int, runs: int = 50) -> float:
    """Median single-image latency in milliseconds on ONE CPU thread, after warm-up.

    One thread is how a CPU server runs one request per core, and it keeps the figure honest on a
    busy machine, where multi-threaded kernels on tiny inputs mostly measure thread contention.
    """
    model = model.eval().to("cpu")
    x = torch.randn(1, in_chans, img_size, img_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _median_ms(model, x, runs)
    finally:
        torch.set_num_threads(threads)


def _median_ms(model: nn.Module, x: torch.Tensor, runs: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return float(sorted(times)[len(times) // 2])


REPORT_KEYS = ("teacher_params", "student_params", "teacher_latency_ms", "student_latency_ms", "teacher_accuracy",
               "student_accuracy", "param_ratio")


def distill_plan(config: DistillConfig) -> TrainingPlan:
    """A classification run whose module also learns from the teacher; its evaluation adds the report."""
    teacher = ClassifyPredictor(load_bundle(config.teacher, task="classify"))
    tcfg = teacher.config
    config.img_size, config.channels = int(tcfg["img_size"]), int(tcfg["in_chans"])
    if not config.data:
        config.data, config.manifest = tcfg["data"], tcfg.get("manifest")
    plan = classify_plan(config, stats=(tcfg["mean"], tcfg["std"]))  # the teacher sees what the student sees
    classes = plan.header["classes"]
    if list(classes) != teacher.classes:
        raise ConfigError(f"{config.data}: classes {list(classes)[:10]} differ from the teacher's {teacher.classes[:10]}")
    student_eval = plan.evaluate

    def evaluate(bundle: Path, progress: bool) -> dict:
        metrics = student_eval(bundle, progress) if student_eval is not None else {}
        report = distill_report(config, teacher, ClassifyPredictor.from_dir(bundle), metrics.get("accuracy"))
        write_json(report, bundle / "distill_report.json")
        atomic_write_bytes(bundle / "distill_report.md", _report_markdown(report).encode())
        return {**metrics, **report}

    return replace(
        plan,
        command="omnivis distill",
        build_module=lambda: DistillModule(config, classes, teacher.model),
        header={**plan.header, "distilled_from": config.teacher},
        evaluate=evaluate,
        summary_keys=(*SUMMARY_KEYS, *REPORT_KEYS),
    )


def distill(config: DistillConfig, out: str | Path, resume: bool = False, callbacks: list | None = None) -> Path:
    """Distill ``config.teacher`` into ``config.model``; writes a classify bundle and a report
    (``distill_report.json`` / ``.md``: parameters, CPU latency and held-out accuracy of both)."""
    return run_training(distill_plan, config, out, resume, callbacks)


def distill_report(config: DistillConfig, teacher: ClassifyPredictor, student: ClassifyPredictor,
                   student_accuracy: float | None) -> dict:
    """Teacher and student side by side; accuracies on exactly the student's held-out images."""
    report = {
        "teacher": config.teacher,
        "teacher_backbone": teacher.config["backbone"],
        "student_backbone": config.model,
        "teacher_params": sum(p.numel() for p in teacher.model.parameters()),
        "student_params": sum(p.numel() for p in student.model.parameters()),
        "teacher_latency_ms": cpu_latency_ms(teacher.model, config.channels, config.img_size),
        "student_latency_ms": cpu_latency_ms(student.model, config.channels, config.img_size),
    }
    if student_accuracy is not None:
        loaded = resolve_classification_data(config.data, manifest=config.manifest, strict=config.strict)
        _, val_idx = split_indices(loaded.labels(), config.val_fraction, seed=config.trainer.seed)
        held_out = loaded.subset(val_idx)
        report["teacher_accuracy"] = evaluate_classifier(config.teacher, data=held_out, progress=False)["accuracy"]
        report["student_accuracy"] = student_accuracy
    report["param_ratio"] = report["student_params"] / report["teacher_params"]
    return report


def _report_markdown(report: dict) -> str:
    rows = [("backbone", report["teacher_backbone"], report["student_backbone"]),
            ("parameters", f"{report['teacher_params']:,}", f"{report['student_params']:,}"),
            ("CPU latency, 1 image (ms)", f"{report['teacher_latency_ms']:.2f}", f"{report['student_latency_ms']:.2f}")]
    if "teacher_accuracy" in report:
        rows.append(("held-out accuracy", f"{report['teacher_accuracy']:.4f}", f"{report['student_accuracy']:.4f}"))
    lines = ["# Distillation report", "", "| | teacher | student |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"
