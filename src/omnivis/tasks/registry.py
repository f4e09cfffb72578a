"""The task table: name -> config class, training, evaluation and predictor factories.

Everything that dispatches on a task (the CLI, ``eval`` and ``predict`` on a bundle) reads this one
table, so adding a task means adding one row here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from omnivis.errors import BundleError, ConfigError
from omnivis.tasks import classify
from omnivis.tasks import detect
from omnivis.tasks import multitask, segment
from omnivis.tasks import generate
from omnivis.tasks.generate.sample import predictor_for_predict as _generator_predict_hint


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    config: type
    train: Callable  # (config, out, resume) -> Path
    evaluate: Callable  # (bundle_dir, data, split, out_dir, strict, progress) -> dict
    predictor: Callable  # (bundle_dir) -> predictor with .predict(images, top_k)


TASKS: dict[str, TaskSpec] = {
    "classify": TaskSpec(
        name="classify",
        description="image classification (any backbone + linear head)",
        config=classify.ClassifyConfig,
        train=classify.train_classifier,
        evaluate=classify.evaluate_classifier,
        predictor=classify.ClassifyPredictor.from_dir,
    ),
    "detect": TaskSpec(
        name="detect",
        description="object detection and instance segmentation (any backbone + FPN + FCOS / Faster R-CNN / RetinaNet / Mask R-CNN)",
        config=detect.DetectConfig,
        train=detect.train_detector,
        evaluate=detect.evaluate_detector,
        predictor=detect.DetectPredictor.from_dir,
    ),
    "segment": TaskSpec(
        name="segment",
        description="semantic segmentation (any backbone + smp U-Net / FPN / DeepLabV3+ decoder)",
        config=segment.SegmentConfig,
        train=segment.train_segmenter,
        evaluate=segment.evaluate_segmenter,
        predictor=segment.SegmentPredictor.from_dir,
    ),
    "multitask": TaskSpec(
        name="multitask",
        description="classification + semantic segmentation + detection on one backbone (one bundle)",
        config=multitask.MultitaskConfig,
        train=multitask.train_multitask,
        evaluate=multitask.evaluate_multitask,
        predictor=multitask.MultitaskPredictor.from_dir,
    ),
    "generate": TaskSpec(
        name="generate",
        description="image generation (ae, vae, vqvae + GPT prior, gan, diffusion); FID/KID with a reference classifier",
        config=generate.GenerateConfig,
        train=generate.train_generator,
        evaluate=generate.evaluate_generator,
        predictor=_generator_predict_hint,  # a clear error: generators are used with omnivis generate
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
