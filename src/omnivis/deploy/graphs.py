"""Deployable graphs: a bundle's model with normalization before it and post-processing after it.

A graph takes what any client can send, uint8 images (N, C, S, S) at the bundle's size, NCHW, and
returns the task's answer. The torch predictors run these same modules, and ``omnivis export`` writes
them to ONNX, so both backends share every step outside the graph (decoding and resizing) and give the
same JSON by construction. Resizing stays outside: clients resize to the size in the bundle's header.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

TOP_K = 5  # classifier graphs return the top-5 (or all classes when there are fewer)


class NormalizedInput(nn.Module):
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] and normalized as in training."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


class ClassifierGraph(nn.Module):
    """uint8 images -> (probabilities (N, K), top-k scores (N, k), top-k class indices (N, k))."""

    output_names = ("probabilities", "top_k_scores", "top_k_indices")

    @staticmethod
    def decisions(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The answer to compare between backends: the top-1 class of each image."""
        return outputs[2][:, 0]

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], num_classes: int) -> None:
        super().__init__()
        self.normalize = NormalizedInput(mean, std)
        self.model = model
        self.k = min(TOP_K, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities = self.model(self.normalize(images)).float().softmax(dim=1)
        scores, indices = probabilities.topk(self.k, dim=1)
        return probabilities, scores, indices


class SegmenterGraph(nn.Module):
    """uint8 images -> (logits (N, K, S, S), class map (N, S, S) uint8).

    The logits are kept so that a caller with an image of another size resamples them before the
    argmax, exactly as the torch predictor does; at the bundle's size the class map is the answer.
    """

    output_names = ("logits", "classes")

    @staticmethod
    def decisions(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The answer to compare between backends: the class of each pixel."""
        return outputs[1]

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = NormalizedInput(mean, std)
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(self.normalize(images)).float()
        return logits, logits.argmax(dim=1).to(torch.uint8)
