"""Detectors on any omnivis backbone: torchvision's Faster R-CNN, RetinaNet, FCOS and Mask R-CNN.

The backbone's ``forward_multiscale`` feeds a ``FeaturePyramidNetwork``; each head gets the extra
levels it expects (a max-pooled level for the R-CNNs, P6/P7 for RetinaNet and FCOS). Anchors are
sized for small images (objects of 6-26 px in 64 px scenes): level ``i`` of stride ``r`` gets
anchors of ``2 r``. The detector's own transform is told the config's image size as both
``min_size`` and ``max_size``, so a 64 px image is not upscaled to 800 px, and it normalizes with
the bundle's mean/std. Labels inside the model are class index + 1 (0 is background).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from omnivis.errors import ConfigError
from omnivis.models.backbones import Backbone

ARCHS = ("fasterrcnn", "retinanet", "fcos", "maskrcnn")


def select_levels(backbone: Backbone, img_size: int) -> list[int]:
    """Indices of the backbone levels the FPN reads: strides 4-16 (and 32 from 128 px images up).

    A stride-2 stem map costs much and adds little; a stride-32 map of a 64 px image is 2 x 2.
    Backbones with a single stride (ViTs) give their last three levels.
    """
    top = 32 if img_size >= 128 else 16
    levels = [i for i, f in enumerate(backbone.feature_info) if 4 <= f["reduction"] <= top]
    if len({backbone.feature_info[i]["reduction"] for i in levels}) < 2:
        levels = list(range(len(backbone.feature_info)))[-3:]
    return levels


class FPNBackbone(nn.Module):
    """An omnivis ``Backbone`` + FPN with the interface torchvision detectors expect.

    The timm model is registered as ``.model`` (the same object as ``backbone.model``), so a detect
    bundle's weights carry ``backbone.model.*`` keys, like every other bundle, and its backbone can
    initialize other tasks through ``--init-from``.

    Attributes:
        out_channels: channels of every pyramid level (torchvision reads it).
    """

    def __init__(self, backbone: Backbone, levels: list[int], out_channels: int, extra: nn.Module) -> None:
        super().__init__()
        self._contract = (backbone,)  # not a submodule: its weights live under .model below
        self.model = backbone.model
        self.levels = list(levels)
        self.fpn = FeaturePyramidNetwork(
            [backbone.feature_info[i]["num_chs"] for i in levels], out_channels, extra_blocks=extra
        )
        self.out_channels = out_channels

    @property
    def backbone(self) -> Backbone:
        return self._contract[0]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """(B, C, H, W) -> {"0": (B, D, H/r0, W/r0), "1": ..., extra levels}: D = out_channels."""
        feats = self.backbone.forward_multiscale(x, upto=max(self.levels))  # later stages are not run
        return self.fpn(OrderedDict((str(k), feats[i]) for k, i in enumerate(self.levels)))


def _level_sizes(backbone: Backbone, levels: list[int], extra_levels: int) -> list[int]:
    """Anchor base size per pyramid level: twice the stride, doubling for each extra level."""
    base = 2 * backbone.feature_info[levels[0]]["reduction"]
    return [base * 2**i for i in range(len(levels) + extra_levels)]


def build_detector(
    arch: str,
    backbone: Backbone,
    num_classes: int,
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    fpn_channels: int = 64,
    score_thresh: float = 0.05,
) -> nn.Module:
    """A torchvision detector for ``num_classes`` object classes (background is added here).

    Args:
        arch: ``fasterrcnn``, ``retinanet``, ``fcos`` or ``maskrcnn``.
        backbone: any ``create_backbone`` result (random, timm or pretrained by ``omnivis pretrain``).
        img_size: the square size images arrive at; the detector's transform keeps it.
        mean, std: per-channel normalization the detector applies to [0, 1] images.
        fpn_channels: width of every pyramid level and of the heads (small keeps CPU training fast).
        score_thresh: lowest score kept in the output (low, so mAP sees the whole PR curve).

    Returns:
        The detector: in training mode ``model(images, targets) -> dict of losses``; in eval mode
        ``model(images) -> [{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,) in 1..num_classes
        (, "masks" (N, 1, H, W) probabilities)}]``.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown detector arch '{arch}'; choose one of {', '.join(ARCHS)}")
    if backbone.in_chans != 3:
        raise ConfigError("detectors take RGB images: use channels=3")
    levels = select_levels(backbone, img_size)
    common = dict(min_size=img_size, max_size=img_size, image_mean=list(mean), image_std=list(std))
    classes = num_classes + 1
    d = fpn_channels
    if arch in ("fasterrcnn", "maskrcnn"):
        body = FPNBackbone(backbone, levels, d, LastLevelMaxPool())
        sizes = _level_sizes(backbone, levels, 1)
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
        names = [str(i) for i in range(len(levels))]
        box_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
        rcnn = dict(
            rpn_anchor_generator=anchors, box_roi_pool=box_pool, box_head=TwoMLPHead(d * 49, 256),
            box_predictor=FastRCNNPredictor(256, classes), box_batch_size_per_image=128,
            rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=150, box_score_thresh=score_thresh, **common,
        )
        if arch == "fasterrcnn":
            return FasterRCNN(body, num_classes=None, **rcnn)
        mask_pool = MultiScaleRoIAlign(featmap_names=names, output_size=14, sampling_ratio=2)
        return MaskRCNN(
            body, num_classes=None, mask_roi_pool=mask_pool, mask_head=MaskRCNNHeads(d, (d, d), 1),
            mask_predictor=MaskRCNNPredictor(d, d, classes), **rcnn,
        )
    body = FPNBackbone(backbone, levels, d, LastLevelP6P7(d, d))
    sizes = _level_sizes(backbone, levels, 2)
    if arch == "retinanet":
        scales = tuple(tuple(int(round(s * 2 ** (k / 3))) for k in range(3)) for s in sizes)
        anchors = AnchorGenerator(scales, ((0.5, 1.0, 2.0),) * len(sizes))
        head = RetinaNetHead(d, anchors.num_anchors_per_location()[0], classes)
        return RetinaNet(body, classes, anchor_generator=anchors, head=head, score_thresh=score_thresh, **common)
    # FCOS: one anchor per location whose size is the level's stride (its size ranges derive from it)
    strides = [s // 2 for s in sizes]
    anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    head = FCOSHead(d, 1, classes, num_convs=2)
    return FCOS(body, classes, anchor_generator=anchors, head=head, score_thresh=score_thresh, **common)
