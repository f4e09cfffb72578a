"""Semantic segmentation models: any omnivis ``Backbone`` + a segmentation-models-pytorch decoder.

smp's decoders (``UnetDecoder``, ``FPNDecoder``, ``DeepLabV3PlusDecoder``) and ``SegmentationHead``
are used as they are; only the encoder is ours. smp decoders expect an encoder pyramid
``[x, s/2, s/4, s/8, s/16, s/32]`` (the input first); :func:`feature_pyramid` builds it from
``Backbone.forward_multiscale`` by taking the level whose stride matches each target stride and
resampling the nearest level where a backbone has none (a ConvNeXt starts at stride 4, a ViT has
every level at stride 4). The backbone stays an attribute ``backbone`` with timm's own keys, so a
bundle from ``omnivis pretrain`` loads into it with ``create_backbone(..., pretrained=BUNDLE)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from omnivis.data.masks import IGNORE_INDEX
from omnivis.models.backbones import Backbone

ARCHS = ("unet", "fpn", "deeplabv3plus")
STRIDES = (2, 4, 8, 16, 32)
DEEPLAB_STRIDES = (2, 4, 8, 16, 16)
SIZE_MULTIPLE = 32  # the deepest stride: input sides must divide by it


def pyramid_sources(backbone: Backbone, strides: tuple[int, ...]) -> list[int]:
    """For each target stride, the backbone level whose stride is closest in log scale (ties: deeper);
    the last target always takes the deepest level, so the decoder sees the whole backbone."""
    reductions = [f["reduction"] for f in backbone.feature_info]
    sources = [min(range(len(reductions)), key=lambda i: (abs(math.log2(reductions[i] / s)), -i)) for s in strides]
    return sources[:-1] + [len(reductions) - 1]


def pyramid_channels(backbone: Backbone, strides: tuple[int, ...]) -> list[int]:
    """Channels of :func:`feature_pyramid`'s maps, the input's first (smp's ``encoder_channels``)."""
    return [backbone.in_chans] + [backbone.feature_info[i]["num_chs"] for i in pyramid_sources(backbone, strides)]


def feature_pyramid(backbone: Backbone, x: torch.Tensor, strides: tuple[int, ...]) -> list[torch.Tensor]:
    """(B, C_in, H, W) -> [x, (B, C_1, H/s_1, W/s_1), ...] for each stride s_i in ``strides``.

    A level the backbone lacks is resampled (bilinear) from the closest one it has. The last stride
    may repeat the one before (DeepLabV3+ wants its deepest map at stride 16, as a dilated encoder
    would give it).
    """
    return pyramid_from_levels(backbone, backbone.forward_multiscale(x), x, strides)


def pyramid_from_levels(backbone: Backbone, levels: list[torch.Tensor], x: torch.Tensor,
                        strides: tuple[int, ...]) -> list[torch.Tensor]:
    """:func:`feature_pyramid` from ``backbone.forward_multiscale(x)`` already computed (multi-task
    models run the backbone once for all heads)."""
    height, width = x.shape[-2:]
    out = [x]
    for stride, source in zip(strides, pyramid_sources(backbone, strides)):
        feature = levels[source]
        size = (height // stride, width // stride)
        if feature.shape[-2:] != size:
            feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        out.append(feature)
    return out


def build_decoder(arch: str, channels: list[int], width: int) -> tuple[nn.Module, int]:
    """smp decoder for ``arch`` over a pyramid with ``channels``; returns (decoder, its out channels).

    ``width`` sets the decoder size: U-Net blocks (2w, w, w/2, w/4, w/4), FPN pyramid 2w / segmentation
    w rounded up to a multiple of 32 (at least 64), DeepLabV3+ ASPP 2w (atrous rates 2, 4, 6: the usual 12/24/36 only see padding on a 4 x 4 map).
    """
    if arch == "unet":
        dec_channels = (2 * width, width, max(8, width // 2), max(8, width // 4), max(8, width // 4))
        return UnetDecoder(channels, dec_channels, n_blocks=5), dec_channels[-1]
    if arch == "fpn":
        # its GroupNorm has 32 groups; >= 2 channels per group keeps a 1 x 1 map of one image valid
        seg = max(64, 32 * math.ceil(width / 32))
        return FPNDecoder(channels, encoder_depth=5, pyramid_channels=2 * width, segmentation_channels=seg,
                          dropout=0.0), seg
    if arch == "deeplabv3plus":
        decoder = DeepLabV3PlusDecoder(channels, encoder_depth=5, out_channels=2 * width, atrous_rates=(2, 4, 6),
                                       output_stride=16, aspp_separable=True, aspp_dropout=0.1)
        return decoder, 2 * width
    raise ValueError(f"unknown arch '{arch}'; choose one of {', '.join(ARCHS)}")


class SegmentationModel(nn.Module):
    """Backbone + smp decoder + 3x3 ``SegmentationHead``; logits are upsampled to the input size.

    Attributes:
        backbone: the omnivis ``Backbone`` (keys ``backbone.model.*``, as every omnivis bundle).
        decoder, head: smp modules.
    """

    def __init__(self, backbone: Backbone, num_classes: int, arch: str = "unet", decoder_width: int = 64) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.backbone = backbone
        self.strides = DEEPLAB_STRIDES if arch == "deeplabv3plus" else STRIDES
        decoder, out_channels = build_decoder(arch, pyramid_channels(backbone, self.strides), decoder_width)
        self.decoder = decoder
        self.head = SegmentationHead(out_channels, num_classes, kernel_size=3)
        initialize_decoder(self.decoder)  # as smp's own models do
        initialize_head(self.head)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> the decoder's input maps."""
        return feature_pyramid(self.backbone, x, self.strides)

    def decode(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Pyramid -> (B, num_classes, H, W) logits at ``size``."""
        logits = self.head(self.decoder(features))
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, num_classes, H, W) logits; H and W must divide by 32."""
        return self.decode(self.pyramid(x), tuple(x.shape[-2:]))


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice: DiceLoss | None, dice_weight: float) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` * Dice over (B, K, H, W) logits and (B, H, W) targets, 255 skipped."""
    loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
    if dice is not None and dice_weight > 0:
        loss = loss + dice_weight * dice(logits, masks)
    return loss
