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

    batched = True  # any batch size in one call

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
    batched = True

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


class DetectorGraph(nn.Module):
    """One uint8 image (1, 3, S, S) -> (boxes (D, 4) x1, y1, x2, y2 in the S x S input's pixels,
    scores (D,), classes (D,) int64 [, masks (D, S, S) float: Mask R-CNN's per-detection mask
    probabilities, pasted into the S x S input]), every detection scoring at least the model's floor
    (0.05).

    One image per call: torchvision's detectors decode boxes and run NMS image by image, so their
    graph has a fixed batch of one; callers loop. The detector normalizes inside itself, so the graph
    only scales to [0, 1] first. Class 0 is the background slot that FCOS and RetinaNet score like
    any class; it is dropped and the rest shifted to the bundle's class indices.
    """

    batched = False

    def __init__(self, model: nn.Module, masks: bool = False) -> None:
        super().__init__()
        self.model = model
        self.masks = masks
        self.output_names = ("boxes", "scores", "classes", "masks") if masks else ("boxes", "scores", "classes")
        self.per_detection = self.output_names  # outputs with a row per detection

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prediction = self.model([images[0].float() / 255.0])[0]
        keep = prediction["labels"] > 0
        found = (prediction["boxes"][keep], prediction["scores"][keep], prediction["labels"][keep] - 1)
        return (*found, prediction["masks"][keep][:, 0]) if self.masks else found

    @staticmethod
    def decisions(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The answer to compare between backends: the class of each detection, best first."""
        return outputs[2]


DETECTION_OUTPUTS = ("boxes", "scores", "det_classes")


class MultitaskGraph(nn.Module):
    """uint8 images -> the answers of a multi-task model's heads, as the single-task graphs give them:
    detect: ``boxes`` (D, 4), ``scores`` (D,), ``det_classes`` (D,) int64 (first, as a detector's
    graph, one image per call); classify: ``probabilities`` (N, K); segment: ``logits`` (N, K, S, S)
    and ``classes`` (N, S, S) uint8. Any batch without a detection head."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = NormalizedInput(mean, std)
        self.model = model
        tasks = model.tasks
        self.batched = "detect" not in tasks
        self.per_detection = () if self.batched else DETECTION_OUTPUTS  # the other heads keep their batch of 1
        self.output_names = ((DETECTION_OUTPUTS if "detect" in tasks else ())
                             + (("probabilities",) if "classify" in tasks else ())
                             + (("logits", "classes") if "segment" in tasks else ()))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.batched:  # a detection head: one image per call, as a detector's graph
            (answer,) = self.answers(images)
            return tuple(answer[name] if name in DETECTION_OUTPUTS else answer[name][None] for name in self.output_names)
        return tuple(self._heads(self.model(self.normalize(images))).values())

    @staticmethod
    def _heads(out: dict) -> dict[str, torch.Tensor]:
        """The class and mask heads' answers for the whole batch, by output name."""
        heads: dict[str, torch.Tensor] = {}
        if "classify" in out:
            heads["probabilities"] = out["classify"].float().softmax(dim=1)
        if "segment" in out:
            heads["logits"] = out["segment"].float()
            heads["classes"] = heads["logits"].argmax(dim=1).to(torch.uint8)
        return heads

    def answers(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The outputs by name, one dict per image, from one model call for the whole batch (what the
        torch backend runs; the ONNX file of a model with a detection head takes one image per call)."""
        out = self.model(self.normalize(images))
        heads = self._heads(out)
        per_image = [{name: value[i] for name, value in heads.items()} for i in range(len(images))]
        if "detect" in out:
            for answer, found in zip(per_image, self.model.detector.detections(out["detect"], images.shape[-2:])):
                keep = found["labels"] > 0  # FCOS's background slot 0 is never an object
                answer.update(zip(DETECTION_OUTPUTS, (found["boxes"][keep], found["scores"][keep],
                                                      found["labels"][keep] - 1)))
        return per_image

    def decisions(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The answers of the class and mask heads to compare between backends: each image's class,
        then the class of each of its pixels (with a detection head, its detections are compared
        apart, as a detector's)."""
        named = dict(zip(self.output_names, outputs))
        parts = []
        if "probabilities" in named:
            parts.append(named["probabilities"].argmax(dim=1, keepdim=True))
        if "classes" in named:
            parts.append(named["classes"].flatten(1).long())
        return torch.cat(parts, dim=1)


class EmbeddingGraph(nn.Module):
    """uint8 faces (N, C, S, S) -> unit embeddings (N, D): a face model with its normalization and,
    when the bundle uses it, the flip test (the sum of a face's and its mirror image's embeddings)."""

    output_names = ("embeddings",)
    batched = True

    @staticmethod
    def decisions(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """An integer answer to compare between backends: each embedding's largest coordinate (the
        embeddings' own difference is the parity figure that matters)."""
        return outputs[0].argmax(dim=1)

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], flip_test: bool) -> None:
        super().__init__()
        self.normalize = NormalizedInput(mean, std)
        self.model = model
        self.flip_test = flip_test

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.normalize(images)
        embeddings = self.model(x).float()
        if self.flip_test:
            embeddings = embeddings + self.model(x.flip(-1)).float()
        return (nn.functional.normalize(embeddings, dim=1),)
