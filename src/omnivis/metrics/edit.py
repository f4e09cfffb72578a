"""Image-quality metrics for the editing task (super-resolution, denoising, inpainting, enhancement,
style transfer), under one stated protocol.

Published PSNR/SSIM numbers are only comparable when the protocol is known: which channel (RGB or the
BT.601 luma Y the super-resolution benchmarks use), which data range, and how many border pixels were
dropped. Every report therefore states both protocols (``quality``) and the one-line ``PROTOCOL``.
PSNR and SSIM are torchmetrics' implementations; this module only fixes their inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from omnivis.errors import ConfigError

PROTOCOL = (
    "PSNR/SSIM on uint8 images scaled to [0,1] (data range 1), on RGB and on the BT.601 Y channel; "
    "super-resolution crops `scale` pixels from each border (crop_border), as the standard SR benchmarks do"
)

_CHANNELS = ("rgb", "y")
# MATLAB rgb2ycbcr luma row for R, G, B in [0, 1], giving Y in [16, 235] / 255.
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_SIGMA = 1.5
# torchmetrics' Gaussian window is 2 * int(3.5 * sigma + 0.5) + 1 = 11 px: 5 px each side of the centre.
_SSIM_PAD = int(3.5 * _SSIM_SIGMA + 0.5)


def rgb_to_y(images: Tensor) -> Tensor:
    """(N, 3, H, W) float RGB in [0, 1] -> (N, 1, H, W) BT.601 luma in [16/255, 235/255].

    The super-resolution benchmarks (MATLAB ``rgb2ycbcr``) score the studio-range luma, so a Y-channel
    PSNR is only comparable to theirs when computed on exactly this Y (not rounded to uint8, as in
    BasicSR). Grey (N, 1, H, W) images are already one channel and pass through unchanged.
    """
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ConfigError(f"rgb_to_y expects 1 or 3 channels, got shape {tuple(images.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (16.0 + (images * w).sum(dim=1, keepdim=True)) / 255.0


def shave(images: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels from every side of (..., H, W) images (0 leaves them unchanged).

    Super-resolution scores ignore a border of ``scale`` pixels, where every method's output depends on
    how it pads; without the crop the numbers are not comparable to published ones.
    """
    if border < 0:
        raise ConfigError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return images
    h, w = images.shape[-2:]
    if 2 * border >= min(h, w):
        raise ConfigError(f"crop_border {border} leaves nothing of a {h}x{w} image")
    return images[..., border : h - border, border : w - border]


def _to_nchw(image) -> Tensor:
    """uint8 (H, W[, C]) numpy or float/uint8 (C, H, W)/(N, C, H, W) tensor -> float64 (N, C, H, W) in [0, 1].

    Numpy arrays are image files' layout (channels last); tensors are torch's (channels first). uint8
    is scaled by 1/255, floats are taken to be in [0, 1] already. float64 keeps the metric exact enough
    to agree with a numpy reference to 1e-4 dB.
    """
    if isinstance(image, np.ndarray):
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        t = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float64) / scale
        if t.ndim == 2:
            return t[None, None]
        if t.ndim == 3:
            return t.permute(2, 0, 1)[None]
        raise ConfigError(f"expected an (H, W) or (H, W, C) image array, got shape {image.shape}")
    if isinstance(image, Tensor):
        t = image.to(torch.float64) / (255.0 if image.dtype == torch.uint8 else 1.0)
        if t.ndim == 3:
            return t[None]
        if t.ndim == 4:
            return t
        raise ConfigError(f"expected a (C, H, W) or (N, C, H, W) image tensor, got shape {tuple(image.shape)}")
    raise ConfigError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")


def _pair(pred, target) -> tuple[Tensor, Tensor]:
    """Both images as float64 NCHW, refusing a pair of different shapes (naming both)."""
    p, t = _to_nchw(pred), _to_nchw(target)
    if p.shape != t.shape:
        raise ConfigError(
            f"prediction and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    return p, t


def _prepare(pred, target, channel: str, crop_border: int) -> tuple[Tensor, Tensor]:
    """The pair as the protocol scores it: chosen channel(s), border cropped."""
    if channel not in _CHANNELS:
        raise ConfigError(f"channel must be one of {', '.join(_CHANNELS)}, got '{channel}'")
    p, t = _pair(pred, target)
    if channel == "y":
        p, t = rgb_to_y(p), rgb_to_y(t)
    return shave(p, crop_border), shave(t, crop_border)


def psnr(pred, target, *, channel: str = "rgb", crop_border: int = 0) -> float:
    """PSNR in dB with data range 1, on RGB or on the BT.601 Y channel, after dropping ``crop_border``.

    A batch is scored per image and averaged (the benchmarks' convention), not over the pooled error.
    Identical images give ``inf``, as torchmetrics does: a finite stand-in would silently cap averages.

    Args:
        pred: uint8 (H, W, 3)/(H, W) array, or float (C, H, W)/(N, C, H, W) tensor in [0, 1].
        target: the reference, same shape and kind as ``pred``.
        channel: ``"rgb"`` (all channels) or ``"y"`` (BT.601 luma, see ``rgb_to_y``).
        crop_border: pixels dropped from each side; ``scale`` for super-resolution.

    Raises:
        ConfigError: shapes differ, an unknown channel, or a crop that leaves nothing.
    """
    p, t = _prepare(pred, target, channel, crop_border)
    value = peak_signal_noise_ratio(p, t, data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
    return float(value)


def ssim(pred, target, *, channel: str = "rgb", crop_border: int = 0) -> float:
    """SSIM (Gaussian window, sigma 1.5, 11 px, K1 0.01, K2 0.03, data range 1), averaged over channels
    and over the valid region of the SSIM map only.

    The map is torchmetrics'; its own mean also covers the 5 px band where the window hangs over a
    reflect-padded border. Wang et al.'s reference code, the SR benchmarks (MATLAB, BasicSR) and
    scikit-image all average only where the window fits inside the image, so the band is dropped here
    to report the number they report. A batch is averaged per image. Arguments and errors as ``psnr``;
    an image (after ``crop_border``) must be at least 11 px on each side.
    """
    p, t = _prepare(pred, target, channel, crop_border)
    h, w = p.shape[-2:]
    if min(h, w) < 2 * _SSIM_PAD + 1:
        raise ConfigError(f"SSIM needs at least {2 * _SSIM_PAD + 1} px per side, got {h}x{w} after cropping")
    _, full = structural_similarity_index_measure(
        p, t, gaussian_kernel=True, sigma=_SSIM_SIGMA, data_range=1.0, return_full_image=True
    )
    valid = full[..., _SSIM_PAD : h - _SSIM_PAD, _SSIM_PAD : w - _SSIM_PAD]
    return float(valid.mean(dim=(1, 2, 3)).mean())


def masked_psnr(pred, target, mask) -> float:
    """PSNR (data range 1, all channels) over the pixels where ``mask`` is true only.

    Inpainting leaves known pixels untouched, so a whole-image PSNR is dominated by them and hides how
    well the hole was filled; scoring the hole alone measures the fill.

    Args:
        pred, target: as for ``psnr``.
        mask: (H, W) bool array or tensor, true where the pixel was missing; applied to every image of
            a batch and every channel.

    Raises:
        ConfigError: shapes differ, the mask's size is not the images', or the mask is empty.
    """
    p, t = _pair(pred, target)
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).bool()
    if tuple(m.shape) != tuple(p.shape[-2:]):
        raise ConfigError(f"mask shape {tuple(m.shape)} does not match image size {tuple(p.shape[-2:])}")
    if not bool(m.any()):
        raise ConfigError("mask selects no pixel; masked PSNR is undefined")
    sel = m.expand_as(p)
    return float(peak_signal_noise_ratio(p[sel], t[sel], data_range=1.0))


def quality(pred, target, *, crop_border: int = 0) -> dict[str, float]:
    """PSNR and SSIM on RGB and on Y, so every report states both protocols (see ``PROTOCOL``)."""
    out: dict[str, float] = {}
    for channel in _CHANNELS:
        out[f"psnr_{channel}"] = psnr(pred, target, channel=channel, crop_border=crop_border)
        out[f"ssim_{channel}"] = ssim(pred, target, channel=channel, crop_border=crop_border)
    return {k: out[k] for k in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")}


def _gram(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices normalised by C*H*W, so layers of any size weigh alike."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w).to(torch.float64)
    return f @ f.transpose(1, 2) / (c * h * w)


def gram_distance(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Style distance: mean over layers of ||G(a) - G(b)||_F^2, with G = F F^T / (C*H*W).

    Gram matrices keep which feature channels fire together and drop where, which is what "style"
    means in Gatys et al.'s sense. The features come from whatever encoder the caller uses (a
    pretrained VGG, or an omnivis backbone's multi-scale features); the distance is only comparable
    between runs that use the same encoder and layers.

    Args:
        a, b: the two images' feature maps, one (1, C, H, W) tensor per layer (a batch N > 1 is
            averaged over images), in the same layer order. H and W may differ between ``a`` and
            ``b`` (a Gram matrix is C x C), so a style image need not match the content's size.

    Raises:
        ConfigError: no layers, a different number of layers, or a layer whose shapes differ.
    """
    if len(a) == 0 or len(a) != len(b):
        raise ConfigError(f"gram_distance needs the same non-zero number of layers, got {len(a)} and {len(b)}")
    total = 0.0
    for i, (fa, fb) in enumerate(zip(a, b)):
        if fa.ndim != 4 or fb.ndim != 4 or fa.shape[:2] != fb.shape[:2]:
            raise ConfigError(
                f"layer {i}: features must be (N, C, H, W) with matching N and C, "
                f"got {tuple(fa.shape)} and {tuple(fb.shape)}"
            )
        diff = _gram(fa) - _gram(fb)
        total += float((diff**2).sum(dim=(1, 2)).mean())
    return total / len(a)
