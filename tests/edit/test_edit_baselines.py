"""Classical editing baselines: each does what it is reported as doing, on tiny synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from omnivis.errors import ConfigError
from omnivis.inference.edit_baselines import (
    BASELINES,
    bicubic_downscale,
    bicubic_upscale,
    clahe_enhance,
    crop_to_multiple,
    gamma_enhance,
    histogram_match,
    navier_stokes_inpaint,
    nlm_denoise,
    run_baseline,
    telea_inpaint,
)
from omnivis.metrics.edit import psnr


def _smooth(h: int = 64, w: int = 64) -> np.ndarray:
    """Gradients plus low-frequency sines: the kind of image bicubic and NLM handle well."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    r = 0.3 + 0.4 * xx + 0.1 * np.sin(2 * np.pi * yy)
    g = 0.5 + 0.3 * np.sin(np.pi * xx + 1) * np.cos(np.pi * yy)
    b = 0.2 + 0.5 * yy
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def _hole(h: int = 32, w: int = 32) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[10:20, 12:22] = True
    return mask


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_round_trip_on_smooth_image(scale):
    x = _smooth(64, 62)
    lr = bicubic_downscale(x, scale)
    xc = crop_to_multiple(x, scale)
    assert lr.shape == (xc.shape[0] // scale, xc.shape[1] // scale, 3) and lr.dtype == np.uint8
    up = bicubic_upscale(lr, scale)
    assert up.shape == xc.shape and up.dtype == np.uint8
    assert psnr(up, xc) > 35.0


def test_bicubic_keeps_a_constant_image_constant():
    c = np.full((12, 12, 3), (10, 128, 250), dtype=np.uint8)
    assert np.array_equal(bicubic_downscale(c, 2), c[:6, :6])
    assert np.array_equal(bicubic_upscale(c, 2), np.full((24, 24, 3), (10, 128, 250), dtype=np.uint8))
    grey = np.full((8, 8), 77, dtype=np.uint8)
    assert np.array_equal(bicubic_upscale(grey, 2), np.full((16, 16), 77, dtype=np.uint8))


def test_nlm_raises_psnr_of_a_noisy_smooth_image():
    x = _smooth()
    rng = np.random.default_rng(0)
    noisy = np.clip(x + rng.normal(0.0, 25.0, x.shape), 0, 255).round().astype(np.uint8)
    out = nlm_denoise(noisy, 25.0)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert psnr(out, x) > psnr(noisy, x) + 3.0


@pytest.mark.parametrize("inpaint", [telea_inpaint, navier_stokes_inpaint])
def test_inpaint_fills_a_constant_image_with_its_colour(inpaint):
    mask = _hole()
    colour = np.full((32, 32, 3), (37, 120, 201), dtype=np.uint8)
    holed = colour.copy()
    holed[mask] = 0
    out = inpaint(holed, mask.astype(np.uint8))
    assert out.shape == colour.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - colour).max() <= 2


@pytest.mark.parametrize("inpaint", [telea_inpaint, navier_stokes_inpaint])
def test_inpaint_keeps_channel_order(inpaint):
    mask = _hole()
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    holed = red.copy()
    holed[mask] = (0, 0, 255)  # blue garbage in the hole must not leak in
    out = inpaint(holed, mask)
    assert np.abs(out.astype(int) - red).max() <= 2


def test_gamma_brightens_dark_and_leaves_mid_grey():
    dark = (_smooth() * 0.25).astype(np.uint8)
    assert gamma_enhance(dark).mean() > dark.mean() + 50
    grey = np.full((16, 16, 3), 128, dtype=np.uint8)
    assert np.abs(gamma_enhance(grey).astype(int) - 128).max() <= 1


def test_clahe_keeps_shape_and_dtype():
    out = clahe_enhance(_smooth(40, 48))
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8


def test_histogram_match_takes_the_style_histogram():
    content = _smooth()
    style = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = histogram_match(content, style)
    assert out.shape == content.shape and out.dtype == np.uint8
    # Equal content values all map to one style value, so the smooth image's ties blur the match a
    # little: compare per-channel means and deciles within a few levels, not exact sorted values.
    assert np.allclose(out.mean(axis=(0, 1)), style.mean(axis=(0, 1)), atol=2.0)
    q = np.linspace(0.0, 1.0, 11)
    qo = np.quantile(out.reshape(-1, 3), q, axis=0)
    qs = np.quantile(style.reshape(-1, 3), q, axis=0)
    assert np.abs(qo - qs).max() <= 5.0


def test_run_baseline_dispatches_every_listed_name():
    x = _smooth(16, 16)
    mask = np.zeros((16, 16), dtype=bool)
    mask[6:9, 6:9] = True
    args = dict(scale=2, sigma=10.0, mask=mask, style=x[::-1])
    names = [n for group in BASELINES.values() for n in group]
    assert names == ["bicubic", "nlm", "telea", "navier_stokes", "clahe", "gamma", "histogram_match"]
    for name in names:
        out = run_baseline(name, x, **args)
        assert out.dtype == np.uint8 and out.shape[2] == 3


def test_run_baseline_errors_are_helpful():
    x = _smooth(16, 16)
    with pytest.raises(ConfigError, match="did you mean 'telea'"):
        run_baseline("teela", x)
    with pytest.raises(ConfigError, match="'nlm' needs sigma"):
        run_baseline("nlm", x)
    with pytest.raises(ConfigError, match="'bicubic' needs scale"):
        run_baseline("bicubic", x)
