"""One backbone, several heads: image classification + semantic segmentation, and the loss weighting.

The backbone runs once per batch: its feature pyramid feeds the smp segmentation decoder, and the
deepest map, average-pooled, feeds a linear classifier. Keys stay ``backbone.model.*`` like every
omnivis model, so a pretrain bundle loads into it and its backbone loads into any other task.
"""

from __future__ import annotations

import torch
from torch import nn

from omnivis.models.backbones import Backbone
from omnivis.models.segmentation import SegmentationModel, pyramid_sources

WEIGHTINGS = ("fixed", "uncertainty")


class MultiTaskModel(SegmentationModel):
    """A ``SegmentationModel`` plus a linear classifier on its deepest, average-pooled feature map.

    ``forward``: (B, C_in, H, W) -> {"classify": (B, K_cls) logits, "segment": (B, K_seg, H, W) logits}.
    Its keys are the segmentation model's (``backbone.``, ``decoder.``, ``head.``) plus ``classifier.``.
    """

    def __init__(self, backbone: Backbone, num_classes: int, num_seg_classes: int, arch: str = "unet",
                 decoder_width: int = 64, dropout: float = 0.0) -> None:
        super().__init__(backbone, num_seg_classes, arch=arch, decoder_width=decoder_width)
        channels = backbone.feature_info[pyramid_sources(backbone, self.strides)[-1]]["num_chs"]
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        features = self.pyramid(x)
        pooled = features[-1].mean(dim=(2, 3))  # (B, C)
        return {"classify": self.classifier(pooled), "segment": self.decode(features, tuple(x.shape[-2:]))}


class LossWeighting(nn.Module):
    """Combines per-task losses.

    ``fixed``: ``sum_i w_i L_i``. ``uncertainty`` (Kendall, Gal & Cipolla 2018, "Multi-task learning
    using uncertainty to weigh losses"): ``sum_i exp(-s_i) L_i + s_i`` with a learned log-variance
    ``s_i`` per task (initialised at 0, so both start with weight 1). A task whose loss is missing in
    a batch (no labels of that kind) contributes nothing, its ``s_i`` included.
    """

    def __init__(self, tasks: tuple[str, ...], mode: str = "fixed", weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"unknown weighting '{mode}'; choose one of {', '.join(WEIGHTINGS)}")
        self.tasks = tasks
        self.mode = mode
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in tasks}
        self.log_vars = nn.Parameter(torch.zeros(len(tasks))) if mode == "uncertainty" else None

    def forward(self, losses: dict[str, torch.Tensor | None]) -> torch.Tensor:
        total = None
        for i, task in enumerate(self.tasks):
            loss = losses.get(task)
            if loss is None:
                continue
            if self.log_vars is not None:
                term = torch.exp(-self.log_vars[i]) * loss + self.log_vars[i]
            else:
                term = self.weights[task] * loss
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no task has labels in this batch")
        return total

    def effective_weights(self) -> dict[str, float]:
        """The multiplier each task's loss currently gets."""
        if self.log_vars is None:
            return dict(self.weights)
        return {t: float(torch.exp(-self.log_vars[i]).detach()) for i, t in enumerate(self.tasks)}
