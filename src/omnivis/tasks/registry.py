"""The task table: name -> what the task is made of (config, training, evaluation, predictor).

Everything that dispatches on a task (the CLI, ``eval`` and ``predict`` on a bundle) reads this one
table, so adding a task means adding one row here. A row's ``training`` and ``inference`` are small
functions that import the task on first use: predicting with one bundle imports that task's model
only (not Lightning, and not diffusers and transformers for a classifier).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from omnivis.errors import BundleError, ConfigError


@dataclass(frozen=True)
class Training:
    """How a task trains: its config dataclass and ``train(config, out, resume=False) -> bundle folder``."""

    config: type
    train: Callable


@dataclass(frozen=True)
class Inference:
    """How a task's bundles are used.

    Attributes:
        evaluate: (bundle_dir, data=None, split="auto", out_dir=None, strict=False, progress=True, ...)
            -> metrics dict.
        predictor: bundle_dir -> a predictor with ``predict(images, top_k, names)``.
    """

    evaluate: Callable
    predictor: Callable | None = None


@dataclass(frozen=True)
class TaskRow:
    """One row of the table: a name, a line for ``--help``, and small functions that import the task.

    ``training`` imports the training code (Lightning); ``inference`` imports only what using a
    bundle needs (torch, timm, the model), so ``omnivis predict`` never imports Lightning.

    Attributes:
        bundle_task: the ``task`` of the bundles it writes (distill writes classify bundles; probe
            writes none).
        use_instead: for bundles that neither predict nor evaluate, what to do with them instead.
    """

    name: str
    description: str
    training: Callable[[], Training] | None = None
    inference: Callable[[], Inference] | None = None
    bundle_task: str | None = None
    use_instead: str = ""

    @property
    def config(self) -> type | None:
        return self.training().config if self.training else None

    @property
    def train(self) -> Callable | None:
        return self.training().train if self.training else None

    @property
    def evaluate(self) -> Callable | None:
        return self.inference().evaluate if self.inference else None

    @property
    def predictor(self) -> Callable | None:
        return self.inference().predictor if self.inference else None


def _classify_training() -> Training:
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    return Training(ClassifyConfig, train_classifier)


def _classify_inference() -> Inference:
    from omnivis.inference.classify import ClassifyPredictor, evaluate_classifier

    return Inference(evaluate_classifier, ClassifyPredictor.from_dir)


def _detect_training() -> Training:
    from omnivis.tasks.detect import DetectConfig, train_detector

    return Training(DetectConfig, train_detector)


def _detect_inference() -> Inference:
    from omnivis.inference.detect import DetectPredictor, evaluate_detector

    return Inference(evaluate_detector, DetectPredictor.from_dir)


def _segment_training() -> Training:
    from omnivis.tasks.segment import SegmentConfig, train_segmenter

    return Training(SegmentConfig, train_segmenter)


def _segment_inference() -> Inference:
    from omnivis.inference.segment import SegmentPredictor, evaluate_segmenter

    return Inference(evaluate_segmenter, SegmentPredictor.from_dir)


def _multitask_training() -> Training:
    from omnivis.tasks.multitask import train_multitask
    from omnivis.tasks.multitask_config import MultitaskConfig

    return Training(MultitaskConfig, train_multitask)


def _multitask_inference() -> Inference:
    from omnivis.inference.multitask import MultitaskPredictor, evaluate_multitask

    return Inference(evaluate_multitask, MultitaskPredictor.from_dir)


def _generate_training() -> Training:
    from omnivis.tasks.generate import GenerateConfig, train_generator

    return Training(GenerateConfig, train_generator)


def _generate_inference() -> Inference:
    from omnivis.tasks.generate.evaluate import evaluate_generator
    from omnivis.tasks.generate.sample import (
        predictor_for_predict,  # a clear error: generators use `omnivis generate`
    )

    return Inference(evaluate_generator, predictor_for_predict)


def _face_training() -> Training:
    from omnivis.tasks.face import FaceConfig, train_face

    return Training(FaceConfig, train_face)


def _face_inference() -> Inference:
    from omnivis.inference.face import FacePredictor, evaluate_face

    return Inference(evaluate_face, FacePredictor.from_dir)


def _edit_training() -> Training:
    from omnivis.tasks.edit import EditConfig, train_edit

    return Training(EditConfig, train_edit)


def _edit_inference() -> Inference:
    from omnivis.inference.edit import EditPredictor, evaluate_edit

    return Inference(evaluate_edit, EditPredictor.from_dir)


def _align_training() -> Training:
    from omnivis.tasks.align import AlignConfig, train_align

    return Training(AlignConfig, train_align)


def _align_inference() -> Inference:
    from omnivis.inference.align import AlignPredictor, evaluate_align

    return Inference(evaluate_align, AlignPredictor.from_dir)


def _pretrain_training() -> Training:
    from omnivis.tasks.pretrain import PretrainConfig, pretrain

    return Training(PretrainConfig, pretrain)


def _distill_training() -> Training:
    from omnivis.tasks.distill import DistillConfig, distill

    return Training(DistillConfig, distill)


def _probe_inference() -> Inference:
    from omnivis.tasks.probe import probe

    return Inference(probe)


TASKS: dict[str, TaskRow] = {
    row.name: row
    for row in (
        TaskRow("classify", "image classification (any backbone + linear head)", _classify_training,
                _classify_inference, "classify"),
        TaskRow("detect", "object detection and instance segmentation (any backbone + FPN + FCOS / Faster R-CNN / "
                "RetinaNet / Mask R-CNN)", _detect_training, _detect_inference, "detect"),
        TaskRow("segment", "semantic segmentation (any backbone + smp U-Net / FPN / DeepLabV3+ decoder)",
                _segment_training, _segment_inference, "segment"),
        TaskRow("multitask", "classification + semantic segmentation + detection on one backbone (one bundle)",
                _multitask_training, _multitask_inference, "multitask"),
        TaskRow("generate", "image generation (ae, vae, vqvae + GPT prior, gan, diffusion); FID/KID with a reference "
                "classifier", _generate_training, _generate_inference, "generate"),
        TaskRow("face", "face recognition: an embedding (ArcFace / CosFace / softmax) judged on unseen people; "
                "enrol, verify, identify with `omnivis face`", _face_training, _face_inference, "face"),
        TaskRow("edit", "image editing: super-resolution, denoising, inpainting, enhancement, style transfer of real "
                "photos, tiled for any size; use with `omnivis edit`", _edit_training, _edit_inference, "edit"),
        TaskRow("align", "image-text alignment to a frozen text encoder (LiT): zero-shot labels and text search with "
                "`omnivis zeroshot` and `omnivis search`", _align_training, _align_inference, "align"),
        TaskRow("pretrain", "self-supervised pretraining of a backbone (simclr, dino, rotation, mae)", _pretrain_training,
                bundle_task="pretrain", use_instead="omnivis probe BUNDLE, or omnivis train classify --init-from BUNDLE"),
        TaskRow("distill", "knowledge distillation of a classifier bundle into a smaller classifier", _distill_training,
                bundle_task="classify"),
        TaskRow("probe", "frozen-feature quality of a backbone: kNN, linear and k-shot accuracy",
                inference=_probe_inference),
    )
}


def get_task(name: str) -> TaskRow:
    """The row that evaluates and predicts with bundles whose ``task`` is ``name``."""
    row = TASKS.get(name)
    if row is not None and row.bundle_task == name and not row.use_instead:
        return row
    if row is not None and row.use_instead:
        raise BundleError(f"a '{name}' bundle holds a backbone only; use it with: {row.use_instead}")
    bundle_tasks = [r.name for r in TASKS.values() if r.bundle_task == r.name and not r.use_instead]
    close = difflib.get_close_matches(name, bundle_tasks, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; available: {', '.join(bundle_tasks)}"
    raise ConfigError(f"unknown task '{name}'{hint}")
