"""Networks that turn a degraded image into a clean one (super-resolution, denoising, enhancement,
inpainting); plain ``nn.Module``s with no knowledge of training.

Each predicts a *residual* over the cheapest guess (the input itself, or its bicubic upscaling), so
at initialization it already equals that guess and training only adds detail: a small CPU budget
then starts from the classical baseline instead of from grey. ``receptive_radius`` says how many
input pixels around a pixel its output depends on: the tiling (``inference/tiling.py``) reads that
much context around each tile, so a tiled pass equals a whole-image pass.

Images are (N, 3, H, W) floats in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.data.degrade import CONDITION_SIZE, bicubic_upscale

ARCHS = ("subpixel", "residual", "inpaint")


def _upsampler(width: int, scale: int) -> nn.Sequential:
    """width channels at (h, w) -> 3 channels at (h * scale, w * scale) by sub-pixel convolution."""
    return nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


class SubPixelNet(nn.Module):
    """ESPCN (Shi et al. 2016): three convolutions at low resolution, then a pixel shuffle; the fast
    super-resolution network. Adds the bicubic upscaling as its skip path.

    Shapes: (N, 3, h, w) -> (N, 3, h * scale, w * scale).
    """

    def __init__(self, scale: int, width: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2), nn.Tanh(),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.Tanh(),
        )
        self.upsample = _upsampler(width // 2, scale)
        nn.init.zeros_(self.upsample[0].weight)
        nn.init.zeros_(self.upsample[0].bias)
        self.receptive_radius = 2 + 1 + 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return bicubic_upscale(image, self.scale) + self.upsample(self.features(image))


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with a skip (EDSR's block: no batch norm, which hurts restoration)."""

    def __init__(self, width: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualNet(nn.Module):
    """EDSR-style (Lim et al. 2017) residual network: the deeper network for super-resolution, and
    the denoiser and enhancer at scale 1 (there it predicts the correction to the input, as DnCNN).

    With ``conditioned``, whole-image statistics (``data.degrade.image_statistics``) are appended
    as constant input planes: a tile of a dark photo cannot tell by itself how dark the photo is.

    Shapes: (N, 3, h, w) [+ condition (N, 6)] -> (N, 3, h * scale, w * scale).
    """

    def __init__(self, scale: int = 1, width: int = 48, blocks: int = 8, conditioned: bool = False) -> None:
        super().__init__()
        self.scale, self.conditioned = scale, conditioned
        in_chans = 3 + (CONDITION_SIZE if conditioned else 0)
        self.head = nn.Conv2d(in_chans, width, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.tail = _upsampler(width, scale) if scale > 1 else nn.Conv2d(width, 3, 3, padding=1)
        last = self.tail[0] if scale > 1 else self.tail
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.receptive_radius = 1 + 2 * blocks + 1 + 1

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = image
        if self.conditioned:
            if condition is None:
                raise ValueError("this network needs the whole image's statistics (condition)")
            planes = condition[:, :, None, None].to(image.dtype).expand(-1, -1, *image.shape[-2:])
            x = torch.cat([image, planes], dim=1)
        features = self.head(x)
        residual = self.tail(features + self.body(features))
        base = bicubic_upscale(image, self.scale) if self.scale > 1 else image
        return base + residual


def _fold_taps(kernel: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-tap axis of a kernel seen from the half-resolution grid: an even output pixel 2i reads
    full-resolution pixels 2i-1, 2i, 2i+1 = half-resolution i-1, i, i; an odd one 2i+1 reads i, i, i+1."""
    k0, k1, k2 = kernel.unbind(dim)
    zero = torch.zeros_like(k0)
    return torch.stack([k0, k1 + k2, zero], dim), torch.stack([zero, k0 + k1, k2], dim)


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_upsample_x2(x))`` for a 3x3, padding-1 ``conv``, computed at ``x``'s resolution:
    one kernel per output parity, then a pixel shuffle. The same numbers (to float rounding) and the
    same work, without the upsampled copy of ``x``: at full resolution that copy is the inpainting
    network's largest activation, and memory is what bounds an edit's tile."""
    rows = _fold_taps(conv.weight, 2)
    kernels = [cols for a in range(2) for cols in _fold_taps(rows[a], 3)]  # parity (a, b) at index 2a + b
    weight = torch.stack(kernels, 1).flatten(0, 1)  # output channel 4c + 2a + b, as pixel_shuffle reads it
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)


def conv_of_parts(conv: nn.Conv2d, *parts: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat(parts, 1))`` as a sum of convolutions over the parts, without the concatenated
    copy (at full resolution, twice the width of the network's feature maps)."""
    out, start = None, 0
    for part in parts:
        stop = start + part.shape[1]
        term = F.conv2d(part, conv.weight[:, start:stop], None, conv.stride, conv.padding, conv.dilation)
        out, start = term if out is None else out + term, stop
    return out if conv.bias is None else out + conv.bias[:, None, None]


class InpaintNet(nn.Module):
    """An encoder-decoder for filling holes: two stride-2 stages, dilated residual blocks at 1/4
    resolution for a wide view of the surroundings, and skip connections back up (the shape of
    LaMa's and DeepFill's generators, small enough for a CPU). Sees the image with its holes already
    filled by the classical guess (``data.degrade.classical_fill``) and the mask, and corrects the
    fill; the known pixels are copied through unchanged.

    Shapes: image (N, 3, H, W), mask (N, 1, H, W) with 1 = missing -> (N, 3, H, W); H and W multiples of 4.
    """

    def __init__(self, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        act = nn.ReLU(inplace=True)
        self.stem = nn.Sequential(nn.Conv2d(4, width, 5, padding=2), act)
        self.down1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act)
        self.down2 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), act)
        self.middle = nn.Sequential(*(ResidualBlock(4 * width, dilation=2 ** (i % 4 + 1)) for i in range(blocks)))
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(4 * width, 2 * width, 3, padding=1), act)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(4 * width, width, 3, padding=1), act)
        self.out = nn.Conv2d(2 * width, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # untrained, it returns the classical fill exactly
        nn.init.zeros_(self.out.bias)
        # stem 2, two stride-2 convs 1 + 2, each block 2 * dilation at 1/4 scale, the way up 2 + 1 + 1,
        # and up to 3 more where a pixel sits off the 1/4 grid
        self.receptive_radius = 12 + 8 * sum(2 ** (i % 4 + 1) for i in range(blocks))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # up1 and up2 keep their (Upsample, Conv2d, ReLU) layout, which bundles' weights are named by,
        # but run as upsample_conv: the same function in a quarter of the memory at full resolution
        s0 = self.stem(torch.cat([image, mask], dim=1))
        s1 = self.down1(s0)
        x = upsample_conv(self.middle(self.down2(s1)), self.up2[1]).relu_()
        x = upsample_conv(torch.cat([x, s1], dim=1), self.up1[1]).relu_()
        correction = conv_of_parts(self.out, x, s0)
        return image + correction * mask


def build_restoration_net(arch: str, scale: int, width: int, blocks: int, conditioned: bool = False) -> nn.Module:
    """The network an edit bundle's header names (``arch``, ``scale``, ``width``, ``blocks``)."""
    if arch == "subpixel":
        return SubPixelNet(scale, width)
    if arch == "residual":
        return ResidualNet(scale, width, blocks, conditioned)
    if arch == "inpaint":
        return InpaintNet(width, blocks)
    raise ValueError(f"unknown restoration network '{arch}'; choose one of {', '.join(ARCHS)}")


def run_restoration(model: nn.Module, op: str, image: torch.Tensor, mask: torch.Tensor | None = None,
                    condition: torch.Tensor | None = None) -> torch.Tensor:
    """Run a restoration network on a batch as its op needs: the mask (N, 1, H, W) for ``inpaint``,
    the whole-image statistics (N, 6) for ``enhance``; training and inference both call this."""
    if op == "inpaint":
        return model(image, mask)
    if op == "enhance":
        return model(image, condition)
    return model(image)
