"""The classical baselines every image-editing op is reported against.

A learned editor's PSNR means little alone: bicubic upscaling, non-local means, Telea inpainting or
CLAHE say how much the network adds over a method with no training at all. Each baseline is a pure
function from uint8 RGB (H, W, 3) (grey (H, W) where the method allows) to uint8 of the same layout,
with no torch state. OpenCV and scikit-image are imported inside the functions, so importing this
module stays cheap.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import torch

from omnivis.data import degrade
from omnivis.errors import ConfigError

BASELINES: dict[str, tuple[str, ...]] = {
    "superres": ("bicubic",),
    "denoise": ("nlm",),
    "inpaint": ("telea", "navier_stokes"),
    "enhance": ("clahe", "gamma"),
    "style": ("histogram_match",),
}



def _check_image(image: np.ndarray) -> np.ndarray:
    """Refuse anything but uint8 (H, W) or (H, W, 3): every baseline's contract."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ConfigError(f"baselines take uint8 numpy images, got {kind}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ConfigError(f"baselines take (H, W, 3) RGB or (H, W) grey images, got shape {image.shape}")
    return image


def _to_float_nchw(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W[, 3]) -> float32 (1, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def _to_uint8_hwc(t: torch.Tensor, grey: bool) -> np.ndarray:
    """float (1, C, H, W) in [0, 1] -> uint8 (H, W[, C]), clamped then rounded to the nearest level."""
    out = (t[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out[0].numpy() if grey else out.permute(1, 2, 0).contiguous().numpy()


def _check_scale(scale: int) -> int:
    """Only integer factors: the benchmarks' x2/x3/x4 and the only ones that round-trip sizes exactly."""
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so H and W are multiples of ``scale``, as the SR benchmarks do before
    degrading, so that downscaling then upscaling returns exactly the cropped size."""
    scale = _check_scale(scale)
    h, w = image.shape[:2]
    if h < scale or w < scale:
        raise ConfigError(f"a {h}x{w} image is smaller than the scale {scale}")
    return image[: h - h % scale, : w - w % scale]


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Upscale by the integer ``scale`` with bicubic interpolation (the super-resolution baseline).

    torch's ``F.interpolate(mode="bicubic", align_corners=False)`` on [0, 1] floats, clamped and rounded
    to uint8: the same resampling our SR network uses as its skip path, so the baseline is exactly what
    the network would output if its learned residual were zero.
    """
    image, scale = _check_image(image), _check_scale(scale)
    return _to_uint8_hwc(degrade.bicubic_upscale(_to_float_nchw(image), scale), grey=image.ndim == 2)


def bicubic_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """The super-resolution benchmarks' degradation: crop to a multiple of ``scale``, then antialiased
    bicubic resize to (H // scale, W // scale), rounded to uint8.

    ``antialias=True`` widens the kernel by the scale as MATLAB's ``imresize`` does, which the benchmark
    low-resolution images were made with; without it the downscale aliases.
    """
    image, scale = _check_image(image), _check_scale(scale)
    image = crop_to_multiple(image, scale)
    small = degrade.bicubic_downscale(_to_float_nchw(image)[0], scale)  # what training degrades with
    return _to_uint8_hwc(small[None], grey=image.ndim == 2)


def nlm_denoise(image: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means denoising (scikit-image), the denoising baseline.

    Args:
        image: uint8 (H, W, 3) or (H, W) noisy image.
        sigma: the noise standard deviation in uint8 levels (0-255), as the task's degradation added
            it; the baseline is given the true sigma, the same knowledge the network is trained with.

    Parameters passed to ``skimage.restoration.denoise_nl_means``: ``sigma=sigma/255`` and
    ``h=0.8*sigma/255`` (the filter strength scikit-image's docs recommend, slightly under sigma, with
    ``fast_mode=True``), ``patch_size=5``, ``patch_distance=6`` (a 13x13 search window),
    ``fast_mode=True``, ``channel_axis=-1`` for colour (``None`` for grey).
    """
    from skimage.restoration import denoise_nl_means

    image = _check_image(image)
    if sigma is None or not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"nlm_denoise needs a finite sigma >= 0 (uint8 levels), got {sigma!r}")
    if sigma == 0:
        return image.copy()
    s = float(sigma) / 255.0
    out = denoise_nl_means(
        image.astype(np.float64) / 255.0, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6,
        fast_mode=True, channel_axis=-1 if image.ndim == 3 else None,
    )
    return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _inpaint(image: np.ndarray, mask, method: str) -> np.ndarray:
    image = _check_image(image)
    m = np.asarray(mask)
    if m.shape != image.shape[:2]:
        raise ConfigError(f"mask shape {m.shape} does not match image size {image.shape[:2]}")
    return degrade.opencv_inpaint(image, m, method)  # the inpainting network starts from the mean of the two


def telea_inpaint(image: np.ndarray, mask) -> np.ndarray:
    """Telea's fast-marching inpainting (``cv2.INPAINT_TELEA``, radius 3).

    Args:
        image: uint8 (H, W, 3) RGB or (H, W) grey; the values under the mask are ignored.
        mask: (H, W) bool or uint8, nonzero where the pixel is missing.
    """
    return _inpaint(image, mask, "telea")


def navier_stokes_inpaint(image: np.ndarray, mask) -> np.ndarray:
    """Navier-Stokes based inpainting (``cv2.INPAINT_NS``, radius 3); arguments as ``telea_inpaint``."""
    return _inpaint(image, mask, "ns")


def clahe_enhance(image: np.ndarray) -> np.ndarray:
    """CLAHE (clip limit 2, 8x8 tiles) on the L channel of LAB, so contrast rises without shifting hue.

    Grey images are equalised directly.
    """
    import cv2

    image = _check_image(image)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    if image.ndim == 2:
        return clahe.apply(np.ascontiguousarray(image))
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def gamma_enhance(image: np.ndarray) -> np.ndarray:
    """Gamma correction with the gamma that takes the image's mean luminance to 0.5.

    gamma = log(0.5) / log(mean), mean being the [0, 1] BT.601 luminance (0.299 R + 0.587 G + 0.114 B)
    clamped to [0.01, 0.99] so black or white images get a bounded gamma; out = in ** gamma on every
    channel. A dark image (mean < 0.5) gets gamma < 1 and brightens; a mid-grey one is left as it is.
    """
    image = _check_image(image)
    x = image.astype(np.float64) / 255.0
    lum = x if x.ndim == 2 else x @ np.array([0.299, 0.587, 0.114])
    mean = float(np.clip(lum.mean(), 0.01, 0.99))
    gamma = math.log(0.5) / math.log(mean)
    return (np.clip(x**gamma, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def histogram_match(content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Match each channel's histogram of ``content`` to ``style``'s (the colour-transfer baseline for
    style transfer): ``skimage.exposure.match_histograms``, rounded to uint8."""
    from skimage.exposure import match_histograms

    content, style = _check_image(content), _check_image(style)
    if content.ndim != style.ndim:
        raise ConfigError(f"content {content.shape} and style {style.shape} differ in channel count")
    out = match_histograms(content, style, channel_axis=-1 if content.ndim == 3 else None)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


_NEEDS = {
    "bicubic": "scale", "nlm": "sigma", "telea": "mask", "navier_stokes": "mask",
    "clahe": None, "gamma": None, "histogram_match": "style",
}


def run_baseline(name: str, degraded: np.ndarray, *, scale: int | None = None, sigma: float | None = None,
                 mask=None, style: np.ndarray | None = None) -> np.ndarray:
    """Run the baseline ``name`` (one of ``BASELINES``' values) on a degraded image.

    Args:
        name: ``bicubic``, ``nlm``, ``telea``, ``navier_stokes``, ``clahe``, ``gamma`` or
            ``histogram_match``.
        degraded: uint8 input (the low-resolution, noisy, masked, dark or content image).
        scale: upscaling factor, for ``bicubic``.
        sigma: noise level in uint8 levels, for ``nlm``.
        mask: missing pixels, for ``telea`` / ``navier_stokes``.
        style: the style image, for ``histogram_match``.

    Raises:
        ConfigError: an unknown name (naming the close match) or the argument the baseline needs
            is missing.
    """
    if name not in _NEEDS:
        close = difflib.get_close_matches(name, list(_NEEDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(_NEEDS)}"
        raise ConfigError(f"unknown baseline '{name}'{hint}")
    given = {"scale": scale, "sigma": sigma, "mask": mask, "style": style}
    needed = _NEEDS[name]
    if needed is not None and given[needed] is None:
        raise ConfigError(f"baseline '{name}' needs {needed}=...")
    if name == "bicubic":
        return bicubic_upscale(degraded, scale)
    if name == "nlm":
        return nlm_denoise(degraded, sigma)
    if name == "telea":
        return telea_inpaint(degraded, mask)
    if name == "navier_stokes":
        return navier_stokes_inpaint(degraded, mask)
    if name == "clahe":
        return clahe_enhance(degraded)
    if name == "gamma":
        return gamma_enhance(degraded)
    return histogram_match(degraded, style)
