"""The task table: name -> config class, training, evaluation and predictor factories.

Everything that dispatches on a task (the CLI, ``eval`` and ``predict`` on a bundle) reads this one
table, so adding a task means adding one row here.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from omnivis.errors import BundleError, ConfigError


def _resolve(ref: str) -> Any:
    """``"package.module:Name.attr"`` -> the object, importing the module now."""
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class TaskSpec:
    """One task's entry points, as ``module:name`` references imported on first use: evaluating or
    predicting with one bundle imports that task's libraries only (not diffusers and transformers
    for a classifier)."""

    name: str
    description: str
    config_ref: str
    train_ref: str  # (config, out, resume) -> Path
    evaluate_ref: str  # (bundle_dir, data, split, out_dir, strict, progress, ...) -> dict
    predictor_ref: str  # (bundle_dir) -> predictor with .predict(images, top_k)

    @property
    def config(self) -> type:
        return _resolve(self.config_ref)

    @property
    def train(self) -> Callable:
        return _resolve(self.train_ref)

    @property
    def evaluate(self) -> Callable:
        return _resolve(self.evaluate_ref)

    @property
    def predictor(self) -> Callable:
        return _resolve(self.predictor_ref)


TASKS: dict[str, TaskSpec] = {
    "classify": TaskSpec(
        name="classify",
        description="image classification (any backbone + linear head)",
        config_ref="omnivis.tasks.classify:ClassifyConfig",
        train_ref="omnivis.tasks.classify:train_classifier",
        evaluate_ref="omnivis.tasks.classify:evaluate_classifier",
        predictor_ref="omnivis.tasks.classify:ClassifyPredictor.from_dir",
    ),
    "detect": TaskSpec(
        name="detect",
        description="object detection and instance segmentation (any backbone + FPN + FCOS / Faster R-CNN / RetinaNet / Mask R-CNN)",
        config_ref="omnivis.tasks.detect:DetectConfig",
        train_ref="omnivis.tasks.detect:train_detector",
        evaluate_ref="omnivis.tasks.detect:evaluate_detector",
        predictor_ref="omnivis.tasks.detect:DetectPredictor.from_dir",
    ),
    "segment": TaskSpec(
        name="segment",
        description="semantic segmentation (any backbone + smp U-Net / FPN / DeepLabV3+ decoder)",
        config_ref="omnivis.tasks.segment:SegmentConfig",
        train_ref="omnivis.tasks.segment:train_segmenter",
        evaluate_ref="omnivis.tasks.segment:evaluate_segmenter",
        predictor_ref="omnivis.tasks.segment:SegmentPredictor.from_dir",
    ),
    "multitask": TaskSpec(
        name="multitask",
        description="classification + semantic segmentation + detection on one backbone (one bundle)",
        config_ref="omnivis.tasks.multitask:MultitaskConfig",
        train_ref="omnivis.tasks.multitask:train_multitask",
        evaluate_ref="omnivis.tasks.multitask:evaluate_multitask",
        predictor_ref="omnivis.tasks.multitask:MultitaskPredictor.from_dir",
    ),
    "generate": TaskSpec(
        name="generate",
        description="image generation (ae, vae, vqvae + GPT prior, gan, diffusion); FID/KID with a reference classifier",
        config_ref="omnivis.tasks.generate:GenerateConfig",
        train_ref="omnivis.tasks.generate:train_generator",
        evaluate_ref="omnivis.tasks.generate:evaluate_generator",
        # a clear error: generators are used with omnivis generate
        predictor_ref="omnivis.tasks.generate.sample:predictor_for_predict",
    ),
}


# bundles of these tasks hold a backbone, not a predictor: say what to do with them instead
BACKBONE_TASKS = {"pretrain": "omnivis probe BUNDLE, or omnivis train classify --init-from BUNDLE"}


def get_task(name: str) -> TaskSpec:
    if name in BACKBONE_TASKS:
        raise BundleError(f"a '{name}' bundle holds a backbone only; use it with: {BACKBONE_TASKS[name]}")
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; available: {', '.join(TASKS)}"
        raise ConfigError(f"unknown task '{name}'{hint}")
    return TASKS[name]
