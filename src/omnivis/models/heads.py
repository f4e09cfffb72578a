"""Heads that sit on a backbone's pooled features."""

from __future__ import annotations

import torch
from torch import nn

from omnivis.models.backbones import Backbone


class ImageClassifier(nn.Module):
    """A backbone and a linear head over its pooled features.

    Keys are ``backbone.model.*`` (timm's own) and ``head.*``, so the backbone half of any omnivis
    bundle loads into any other task.
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.head(self.backbone.forward_pooled(images))
