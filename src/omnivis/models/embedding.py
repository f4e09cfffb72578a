"""An embedding head on a backbone: what face recognition (and any metric-learning task) trains.

The head is ArcFace's "BN - dropout - FC - BN" on the pooled features (Deng et al. 2019, the
insightface ``fc5`` head): the last batch-norm keeps the embedding's scale stable, which the
angular losses need. The model returns raw embeddings; callers compare them as unit vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from omnivis.models.backbones import Backbone


class EmbeddingModel(nn.Module):
    """A backbone and an embedding head. Keys are ``backbone.model.*`` and ``head.*``, like every
    task model, so a face bundle's backbone loads into any other task and back."""

    def __init__(self, backbone: Backbone, embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding_size = embedding_size
        self.head = nn.Sequential(
            nn.BatchNorm1d(backbone.num_features),
            nn.Dropout(dropout),
            nn.Linear(backbone.num_features, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized images -> (B, embedding_size) embeddings (not unit length)."""
        return self.head(self.backbone.forward_pooled(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, embedding_size) unit vectors: what galleries store and scores compare."""
        return nn.functional.normalize(self(images), dim=1)
