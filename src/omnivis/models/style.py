"""Style transfer by adaptive instance normalization (AdaIN, Huang & Belongie 2017): a frozen encoder,
the content's features re-normalized to the style's channel means and stds, and a trained decoder
back to pixels. The encoder is an omnivis backbone (``Backbone.forward_multiscale``), so a backbone
pretrained with ``omnivis pretrain`` serves as it is; without one it is the seeded random backbone
(random convolutional features still carry texture statistics, Ustyuzhaninov et al. 2017).

The statistics are passed in rather than computed inside ``forward``: a large photo is decoded tile
by tile, and every tile must be normalized with the whole image's content statistics, or tiles would
disagree (``inference/edit_style.py`` gathers them over the whole image, tile by tile).

Images are (N, 3, H, W) floats in [0, 1]; H and W multiples of the encoder's stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.models.backbones import Backbone

EPS = 1e-5


def channel_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> per-channel mean and std, each (N, C, 1, 1)."""
    mean = features.mean(dim=(2, 3), keepdim=True)
    std = (features.var(dim=(2, 3), keepdim=True, unbiased=False) + EPS).sqrt()
    return mean, std


def adain(content: torch.Tensor, content_stats, style_stats) -> torch.Tensor:
    """AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), with the statistics given."""
    (c_mean, c_std), (s_mean, s_std) = content_stats, style_stats
    return s_std * (content - c_mean) / c_std + s_mean


def _decoder_block(in_chs: int, out_chs: int, upsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
    layers += [nn.ReflectionPad2d(1), nn.Conv2d(in_chs, out_chs, 3), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class StyleTransferNet(nn.Module):
    """A frozen ``encoder`` read at feature level ``level`` (AdaIN there; style loss on levels 0..level)
    and a decoder that mirrors it with nearest upsampling and reflection padding (as AdaIN's).

    Shapes: content (N, 3, H, W), stats per channel of level ``level`` -> (N, 3, H, W).
    """

    def __init__(self, encoder: Backbone, level: int = 2, width: int = 64) -> None:
        super().__init__()
        self.encoder, self.level = encoder, level
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        channels = encoder.feature_info[level]["num_chs"]
        self.stride = encoder.feature_info[level]["reduction"]
        blocks, chs = [], channels
        for step in range(self.stride.bit_length() - 1):  # one x2 upsampling per halving
            out = max(16, (2 * width) >> step)
            blocks.append(_decoder_block(chs, out, upsample=True))
            chs = out
        self.decoder = nn.Sequential(*blocks, nn.ReflectionPad2d(1), nn.Conv2d(chs, 3, 3))
        self.receptive_radius = 4 * self.stride + 2 * len(blocks) * 2

    def train(self, mode: bool = True) -> StyleTransferNet:
        super().train(mode)
        self.encoder.eval()  # frozen: its batch-norm statistics never move
        return self

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's levels 0..level, each (N, C_l, H / r_l, W / r_l)."""
        return self.encoder.forward_multiscale(images, upto=self.level)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(features))

    def forward(self, content: torch.Tensor, content_stats, style_stats, alpha: float = 1.0) -> torch.Tensor:
        """Content images restyled to ``style_stats`` (level ``level``'s); ``alpha`` < 1 keeps some content.
        H and W that are not multiples of the stride are padded by repeating the last row and column."""
        h, w = content.shape[-2:]
        pad = (0, (-w) % self.stride, 0, (-h) % self.stride)
        if any(pad):
            return self.forward(F.pad(content, pad, mode="replicate"), content_stats, style_stats, alpha)[..., :h, :w]
        features = self.features(content)[-1]
        target = adain(features, content_stats, style_stats)
        if alpha != 1.0:
            target = alpha * target + (1 - alpha) * features
        return self.decode(target)

    def training_loss(self, content: torch.Tensor, style: torch.Tensor, style_weight: float) -> tuple[torch.Tensor, dict]:
        """AdaIN's loss: the output's features should be the AdaIN target (content loss), and its
        channel statistics at every level those of the style image (style loss)."""
        with torch.no_grad():
            content_top = self.features(content)[-1]
            style_levels = self.features(style)
            target = adain(content_top, channel_stats(content_top), channel_stats(style_levels[-1]))
        out_levels = self.features(self.decode(target))
        content_loss = F.mse_loss(out_levels[-1], target)
        style_loss = content.new_zeros(())
        for out, ref in zip(out_levels, style_levels):
            (o_mean, o_std), (r_mean, r_std) = channel_stats(out), channel_stats(ref)
            style_loss = style_loss + F.mse_loss(o_mean, r_mean) + F.mse_loss(o_std, r_std)
        loss = content_loss + style_weight * style_loss
        return loss, {"train/content_loss": content_loss.detach(), "train/style_loss": style_loss.detach()}
