"""One backbone, several heads (classification, semantic segmentation, FCOS detection) and the loss weighting.

The backbone runs once per batch (``forward_multiscale``) and every head reads those same levels:
- ``classify``: a linear classifier on the deepest level, average-pooled;
- ``segment``: the smp decoder of ``models.segmentation`` over its stride pyramid;
- ``detect``: the FPN (+ P6/P7) and ``FCOSHead`` that ``models.detection.build_detector`` builds for
  ``fcos`` (same levels, anchor sizes and head), with torchvision ``FCOS``'s own ``compute_loss`` and
  ``postprocess_detections`` applied to the shared features.
Keys stay ``backbone.model.*`` like every omnivis model, so a pretrain bundle loads into it and its
backbone loads into any other task. A two-task model (no detection) has exactly the keys it had
before detection joined (``backbone.``, ``decoder.``, ``head.``, ``classifier.``); the detection
branch adds ``detector.fpn.`` and ``detector.head.``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from torch import nn
from torchvision.models.detection.image_list import ImageList

from omnivis.models.backbones import Backbone
from omnivis.models.detection import build_detector
from omnivis.models.segmentation import DEEPLAB_STRIDES, STRIDES, build_decoder, pyramid_channels, pyramid_from_levels

WEIGHTINGS = ("fixed", "uncertainty")
TASK_NAMES = ("classify", "segment", "detect")
DEFAULT_TASKS = ("classify", "segment")


class DetectionBranch(nn.Module):
    """FPN + FCOS head over backbone levels, with torchvision FCOS's loss and box decoding.

    The pieces come from ``build_detector("fcos", ...)``: its FPN and head are registered here
    (``fpn.``, ``head.``); the ``FCOS`` object itself is kept outside the module tree (it also holds
    the backbone, which the multi-task model owns) and lends its anchor generator, ``compute_loss``
    and ``postprocess_detections``. Labels inside are class index + 1 (0 is background).
    """

    def __init__(self, backbone: Backbone, num_classes: int, img_size: int, channels: int = 64,
                 score_thresh: float = 0.05) -> None:
        super().__init__()
        fcos = build_detector("fcos", backbone, num_classes, img_size, (0.0,) * 3, (1.0,) * 3, channels, score_thresh)
        self.levels: list[int] = list(fcos.backbone.levels)
        self.fpn = fcos.backbone.fpn
        self.head = fcos.head
        self._fcos = (fcos,)  # not a submodule: no second copy of the backbone's keys

    @property
    def fcos(self):
        return self._fcos[0]

    def forward(self, levels: list[torch.Tensor], images: torch.Tensor) -> dict:
        """Backbone levels + the (B, C, H, W) input -> ``{"cls_logits" (B, A, K+1), "bbox_regression"
        (B, A, 4), "bbox_ctrness" (B, A, 1), "anchors" (A, 4) xyxy in input pixels, "num_anchors_per_level"}``."""
        pyramid = list(self.fpn(OrderedDict((str(k), levels[i]) for k, i in enumerate(self.levels))).values())
        out = dict(self.head(pyramid))
        size = tuple(images.shape[-2:])
        # every image has the same size, so one image's anchors serve the batch
        out["anchors"] = self.fcos.anchor_generator(ImageList(images[:1], [size]), pyramid)[0]
        out["num_anchors_per_level"] = [p.shape[-2] * p.shape[-1] for p in pyramid]
        return out

    def loss(self, out: dict, targets: list[dict], keep: list[int] | None = None) -> dict[str, torch.Tensor]:
        """FCOS's losses (``classification``, ``bbox_regression``, ``bbox_ctrness``) over the images ``keep``.

        Args:
            out: :meth:`forward`'s output for the whole batch.
            targets: one ``{"boxes" (N, 4) xyxy input pixels, "labels" (N,) in 1..K}`` per kept image.
            keep: batch positions of the images that have box labels (None: all of them).
        """
        head = {k: out[k] for k in ("cls_logits", "bbox_regression", "bbox_ctrness")}
        if keep is not None:
            index = torch.as_tensor(keep, device=out["anchors"].device)
            head = {k: v.index_select(0, index) for k, v in head.items()}
        anchors = [out["anchors"]] * len(targets)
        return self.fcos.compute_loss(targets, head, anchors, out["num_anchors_per_level"])

    def detections(self, out: dict, image_size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """Decoded boxes per image: ``{"boxes" (N, 4) xyxy input pixels, "scores" (N,), "labels" (N,) 1..K}``."""
        sizes = out["num_anchors_per_level"]
        split = {k: list(out[k].split(sizes, dim=1)) for k in ("cls_logits", "bbox_regression", "bbox_ctrness")}
        batch = out["cls_logits"].shape[0]
        anchors = [list(out["anchors"].split(sizes))] * batch
        return self.fcos.postprocess_detections(split, anchors, [tuple(image_size)] * batch)


class MultiTaskModel(nn.Module):
    """One backbone and a head per task in ``tasks``.

    ``forward``: (B, C_in, H, W) -> {"classify": (B, K_cls) logits, "segment": (B, K_seg, H, W) logits,
    "detect": :meth:`DetectionBranch.forward`'s dict}, with only the keys of ``tasks``.

    Attributes:
        backbone: the omnivis ``Backbone``.
        decoder, head: the smp segmentation decoder and head (``segment``).
        classifier: dropout + linear (``classify``).
        detector: a :class:`DetectionBranch` (``detect``).
    """

    def __init__(self, backbone: Backbone, num_classes: int, num_seg_classes: int, arch: str = "unet",
                 decoder_width: int = 64, dropout: float = 0.0, *, tasks: tuple[str, ...] = DEFAULT_TASKS,
                 num_det_classes: int | None = None, img_size: int | None = None, fpn_channels: int = 64) -> None:
        super().__init__()
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {', '.join(TASK_NAMES)}, got {tasks}")
        self.tasks = tuple(t for t in TASK_NAMES if t in tasks)
        self.arch = arch
        self.backbone = backbone
        self.strides = DEEPLAB_STRIDES if arch == "deeplabv3plus" else STRIDES
        if "segment" in self.tasks:
            decoder, out_channels = build_decoder(arch, pyramid_channels(backbone, self.strides), decoder_width)
            self.decoder = decoder
            self.head = SegmentationHead(out_channels, num_seg_classes, kernel_size=3)
            initialize_decoder(self.decoder)  # as smp's own models (and SegmentationModel) do
            initialize_head(self.head)
        if "classify" in self.tasks:
            channels = backbone.feature_info[-1]["num_chs"]
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        if "detect" in self.tasks:
            if num_det_classes is None or img_size is None:
                raise ValueError("the detect head needs num_det_classes and img_size")
            self.detector = DetectionBranch(backbone, num_det_classes, img_size, fpn_channels)

    def pyramid(self, levels: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone levels -> the segmentation decoder's maps ``[x, (B, C_i, H/s_i, W/s_i) per stride]``."""
        return pyramid_from_levels(self.backbone, levels, x, self.strides)

    def forward(self, x: torch.Tensor) -> dict:
        levels = self.backbone.forward_multiscale(x)
        out: dict = {}
        deepest = levels[-1]
        if "segment" in self.tasks:
            features = self.pyramid(levels, x)
            deepest = features[-1]  # the map the two-task model always pooled (resampled for DeepLabV3+)
            logits = self.head(self.decoder(features))
            if logits.shape[-2:] != x.shape[-2:]:
                logits = F.interpolate(logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            out["segment"] = logits
        if "classify" in self.tasks:
            out["classify"] = self.classifier(deepest.mean(dim=(2, 3)))  # (B, C) -> (B, K)
        if "detect" in self.tasks:
            out["detect"] = self.detector(levels, x)
        return out


class LossWeighting(nn.Module):
    """Combines per-task losses.

    ``fixed``: ``sum_i w_i L_i``. ``uncertainty`` (Kendall, Gal & Cipolla 2018, "Multi-task learning
    using uncertainty to weigh losses"): ``sum_i exp(-s_i) L_i + s_i`` with a learned log-variance
    ``s_i`` per task (initialised at 0, so every task starts with weight 1). A task whose loss is
    missing in a batch (no labels of that kind) contributes nothing, its ``s_i`` included.
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
