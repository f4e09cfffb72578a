"""SimCLR: two augmented views of an image should embed close together, apart from other images.

Chen et al., 2020 (https://arxiv.org/abs/2002.05709). Loss: NT-Xent over the 2B projections,
``-log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from omnivis.models.backbones import Backbone
from omnivis.tasks.pretrain.base import PretrainMethod


class SimCLR(PretrainMethod):
    """Backbone -> 2-layer projection head -> NT-Xent (lightly's head and loss).

    Args:
        backbone: any backbone (pooled features are used).
        temperature: NT-Xent temperature.
        hidden_dim, out_dim: projection head widths.
    """

    def __init__(self, backbone: Backbone, temperature: float, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.num_features, hidden_dim, out_dim)
        # negatives from every rank when running distributed (a no-op on one process)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=dist.is_available())

    def training_loss(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """views: two (B, C, H, W) batches; both go through the backbone together (one pass, shared
        batch-norm statistics)."""
        view_a, view_b = views[0], views[1]
        z = self.projection_head(self.backbone.forward_pooled(torch.cat([view_a, view_b])))
        z_a, z_b = z.chunk(2)
        return self.criterion(z_a, z_b), {}
