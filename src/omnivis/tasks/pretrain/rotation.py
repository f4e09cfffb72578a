"""Rotation prediction: learn features by telling which way up an image is.

Gidaris et al., 2018 (https://arxiv.org/abs/1803.07728). Each image is turned by k * 90 degrees
(k drawn per sample by the view transform) and a linear head predicts k with cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.models.backbones import Backbone
from omnivis.tasks.pretrain.base import PretrainMethod


class RotationPrediction(PretrainMethod):
    """Backbone -> linear 4-way head -> cross-entropy on the quarter-turn count."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.rotation_head = nn.Linear(backbone.num_features, 4)

    def training_loss(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """views: ``(images (B, C, H, W), k (B,))``; also logs the rotation accuracy."""
        images, k = views[0], views[1]
        logits = self.rotation_head(self.backbone.forward_pooled(images))
        accuracy = (logits.argmax(dim=1) == k).float().mean()
        return F.cross_entropy(logits, k), {"train/rotation_accuracy": float(accuracy)}
