"""Image generation: ae, vae, vqvae (+ autoregressive prior), gan and diffusion, one bundle format.

``train_generator`` trains any method into a bundle; ``GeneratorPredictor`` samples and
interpolates from one; ``evaluate_generator`` measures FID/KID with a classifier omnivis trained.
Names load on first use, so sampling (``GeneratorPredictor``) never imports Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from omnivis.tasks.generate.config import METHODS, GenerateConfig
    from omnivis.tasks.generate.evaluate import evaluate_generator
    from omnivis.tasks.generate.sample import GeneratorPredictor
    from omnivis.tasks.generate.train import train_generator

_HOMES = {
    "METHODS": "config", "GenerateConfig": "config", "GeneratorPredictor": "sample",
    "evaluate_generator": "evaluate", "train_generator": "train",
}

__all__ = ["METHODS", "GenerateConfig", "GeneratorPredictor", "evaluate_generator", "train_generator"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'omnivis.tasks.generate' has no attribute '{name}'")
    return getattr(importlib.import_module(f"omnivis.tasks.generate.{_HOMES[name]}"), name)
