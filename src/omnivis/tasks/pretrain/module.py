"""The one LightningModule for every pretraining method, and the table of methods.

The module only wires a method (a plain ``nn.Module`` from this package) into Lightning: it logs
``train/loss``, calls the method's hooks and builds the optimizer. A new method is a module with a
``training_loss`` plus one entry in :data:`METHOD_FACTORIES` and one view builder in ``views.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch

from omnivis.models.backbones import create_backbone
from omnivis.tasks.common import adamw_with_warmup_cosine, log_training
from omnivis.tasks.pretrain.base import PretrainMethod
from omnivis.tasks.pretrain.config import PretrainConfig
from omnivis.tasks.pretrain.dino import DINO
from omnivis.tasks.pretrain.mae import MAE
from omnivis.tasks.pretrain.rotation import RotationPrediction
from omnivis.tasks.pretrain.simclr import SimCLR


def _simclr(config: PretrainConfig) -> PretrainMethod:
    return SimCLR(create_backbone(config.model, config.channels, img_size=config.img_size), config.temperature)


def _dino(config: PretrainConfig) -> PretrainMethod:
    return DINO(create_backbone(config.model, config.channels, img_size=config.img_size), config.momentum)


def _rotation(config: PretrainConfig) -> PretrainMethod:
    return RotationPrediction(create_backbone(config.model, config.channels, img_size=config.img_size))


def _mae(config: PretrainConfig) -> PretrainMethod:
    return MAE(create_backbone(config.model, config.channels, img_size=config.img_size), config.mask_ratio)


METHOD_FACTORIES: dict[str, Callable[[PretrainConfig], PretrainMethod]] = {
    "simclr": _simclr,
    "dino": _dino,
    "rotation": _rotation,
    "mae": _mae,
}


def build_method(config: PretrainConfig) -> PretrainMethod:
    """The method named by ``config.method`` around a fresh ``config.model`` backbone."""
    return METHOD_FACTORIES[config.method](config)


class PretrainModule(pl.LightningModule):
    """Self-supervised training of ``build_method(config)``; batch labels are ignored.

    Attributes:
        method: the method (its ``backbone`` is what the bundle exports).
        last_loss: the most recent training loss, for ``metrics.json``.
    """

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        self.method = build_method(config)
        self.last_loss = float("nan")
        self._total_steps = 1

    def on_train_start(self) -> None:
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        views, _labels = batch
        loss, extra = self.method.training_loss(views)
        log_training(self, {"train/loss": loss, **extra})
        self.last_loss = float(loss.detach())
        return loss

    def on_after_backward(self) -> None:
        self.method.after_backward(self.current_epoch)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.method.after_step(self.global_step / self._total_steps)

    def configure_optimizers(self) -> dict:
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        trainable = self.method.parameters_to_train()
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": self.config.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return adamw_with_warmup_cosine(
            self.method, self.config.lr, self.config.weight_decay, total, int(self.config.warmup_epochs * per_epoch),
            param_groups=groups,
        )
