"""The pretraining methods: one typed row each (name -> how to build it, its views, its settings).

Adding a method is a module with a ``PretrainMethod`` (a plain ``nn.Module`` with ``training_loss``),
a view builder in ``views.py`` and one row here; the config, the module, the run and the bundle read
everything else from the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omnivis.models.backbones import create_backbone
from omnivis.tasks.pretrain.base import PretrainMethod
from omnivis.tasks.pretrain.config import PretrainConfig
from omnivis.tasks.pretrain.dino import DINO
from omnivis.tasks.pretrain.mae import MAE
from omnivis.tasks.pretrain.rotation import RotationPrediction
from omnivis.tasks.pretrain.simclr import SimCLR
from omnivis.tasks.pretrain.views import (
    dino_views,
    mae_views,
    rotation_views,
    simclr_views,
)


@dataclass(frozen=True)
class PretrainMethodSpec:
    """One self-supervised method.

    Attributes:
        name: what ``--method`` calls it.
        build: (config, backbone) -> the method around that fresh backbone.
        views: (config, mean, std) -> the training transform (PIL image -> the method's views).
        parameters: config -> the settings that define the method, recorded next to its loss.
    """

    name: str
    build: Callable[[PretrainConfig, object], PretrainMethod]
    views: Callable[[PretrainConfig, tuple, tuple], Callable]
    parameters: Callable[[PretrainConfig], dict]


METHOD_SPECS: dict[str, PretrainMethodSpec] = {
    "simclr": PretrainMethodSpec("simclr", lambda c, b: SimCLR(b, c.temperature), simclr_views,
                                 lambda c: {"temperature": c.temperature}),
    "dino": PretrainMethodSpec("dino", lambda c, b: DINO(b, c.momentum), dino_views,
                               lambda c: {"momentum": c.momentum, "local_crops": c.local_crops}),
    "rotation": PretrainMethodSpec("rotation", lambda c, b: RotationPrediction(b), rotation_views,
                                   lambda c: {"num_rotations": 4}),
    "mae": PretrainMethodSpec("mae", lambda c, b: MAE(b, c.mask_ratio), mae_views,
                              lambda c: {"mask_ratio": c.mask_ratio}),
}


def build_method(config: PretrainConfig) -> PretrainMethod:
    """The method named by ``config.method`` around a fresh ``config.model`` backbone."""
    backbone = create_backbone(config.model, config.channels, img_size=config.img_size)
    return METHOD_SPECS[config.method].build(config, backbone)
