"""The one LightningModule for every pretraining method.

The module only wires a method (a plain ``nn.Module`` from this package, built from its row in
``methods.METHOD_SPECS``) into Lightning: it logs ``train/loss``, calls the method's hooks and
builds the optimizer.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.pretrain.config import PretrainConfig
from omnivis.tasks.pretrain.methods import build_method


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
        trainable = self.method.parameters_to_train()
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": self.config.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return warmup_cosine_for(self, self.method, self.config.lr, self.config.weight_decay, self.config.warmup_epochs,
                                 param_groups=groups)
