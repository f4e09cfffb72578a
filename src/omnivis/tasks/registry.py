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
