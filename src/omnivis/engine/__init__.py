"""The training engine (a Lightning Trainer built from a config) and the bundle format."""

from omnivis.engine.bundle import Bundle, load_bundle, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer

__all__ = ["Bundle", "TrainerConfig", "build_trainer", "load_bundle", "save_bundle"]
