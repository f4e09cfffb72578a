"""Self-supervised pretraining: simclr, dino, rotation and mae, one small module each.

``pretrain(PretrainConfig(...), out)`` trains a backbone on unlabeled images and writes a bundle
(task ``pretrain``) whose ``backbone.model.*`` weights any task loads with ``--init-from``.
"""

from omnivis.tasks.pretrain.base import PretrainMethod
from omnivis.tasks.pretrain.config import DEFAULT_MODELS, METHODS, PretrainConfig
from omnivis.tasks.pretrain.dino import DINO
from omnivis.tasks.pretrain.mae import MAE
from omnivis.tasks.pretrain.methods import (
    METHOD_SPECS,
    PretrainMethodSpec,
    build_method,
)
from omnivis.tasks.pretrain.module import PretrainModule
from omnivis.tasks.pretrain.rotation import RotationPrediction
from omnivis.tasks.pretrain.simclr import SimCLR
from omnivis.tasks.pretrain.train import (
    TASK,
    load_pretrain_data,
    pretrain,
    pretrain_plan,
)
from omnivis.tasks.pretrain.views import build_views

__all__ = [
    "DEFAULT_MODELS",
    "DINO",
    "MAE",
    "METHODS",
    "METHOD_SPECS",
    "TASK",
    "PretrainConfig",
    "PretrainMethod",
    "PretrainMethodSpec",
    "PretrainModule",
    "RotationPrediction",
    "SimCLR",
    "build_method",
    "build_views",
    "load_pretrain_data",
    "pretrain",
    "pretrain_plan",
]
