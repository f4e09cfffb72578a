"""Image-quality metrics of the editing task against direct numpy / scikit-image computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from omnivis.errors import ConfigError
from omnivis.metrics.edit import (
    PROTOCOL,
    gram_distance,
    masked_psnr,
    psnr,
    quality,
    rgb_to_y,
    shave,
    ssim,
)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 image and a copy with bounded uniform noise added (clipped to uint8)."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, target.shape)
    pred = np.clip(target.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return pred, target


def _np_y(image: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma in [0, 1], written out independently of rgb_to_y."""
    x = image.astype(np.float64) / 255.0
    return (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    # The Wang et al. settings; scikit-image averages the valid region, as our ssim does, so the two
    # must agree to rounding (measured difference ~1e-16), not merely to a border tolerance.
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        channel_axis=channel_axis,
    )


def test_psnr_matches_numpy_rgb_and_y_with_crop(pair):
    pred, target = pair
    p, t = pred / 255.0, target / 255.0
    assert psnr(pred, target) == pytest.approx(_np_psnr(p, t), abs=1e-4)
    c = 2
    assert psnr(pred, target, crop_border=c) == pytest.approx(_np_psnr(p[c:-c, c:-c], t[c:-c, c:-c]), abs=1e-4)
    yp, yt = _np_y(pred)[c:-c, c:-c], _np_y(target)[c:-c, c:-c]
    assert psnr(pred, target, channel="y", crop_border=c) == pytest.approx(_np_psnr(yp, yt), abs=1e-4)


def test_ssim_matches_skimage_rgb_and_y(pair):
    pred, target = pair
    assert ssim(pred, target) == pytest.approx(_sk_ssim(pred / 255.0, target / 255.0, -1), abs=1e-6)
    c = 2
    yp, yt = _np_y(pred)[c:-c, c:-c], _np_y(target)[c:-c, c:-c]
    assert ssim(pred, target, channel="y", crop_border=c) == pytest.approx(_sk_ssim(yp, yt, None), abs=1e-6)


def test_tensor_input_scores_as_uint8_array(pair):
    pred, target = pair
    tp = torch.from_numpy(pred).permute(2, 0, 1).float() / 255.0
    tt = torch.from_numpy(target).permute(2, 0, 1).float() / 255.0
    assert psnr(tp, tt) == pytest.approx(psnr(pred, target), abs=1e-4)
    assert ssim(tp[None], tt[None], channel="y") == pytest.approx(ssim(pred, target, channel="y"), abs=1e-5)


def test_y_of_white_and_black():
    img = torch.zeros(2, 3, 2, 2)
    img[0] = 1.0
    y = rgb_to_y(img)
    assert y.shape == (2, 1, 2, 2)
    assert torch.allclose(y[0], torch.full((1, 2, 2), 235 / 255), atol=1e-6)
    assert torch.allclose(y[1], torch.full((1, 2, 2), 16 / 255), atol=1e-6)
    grey = torch.rand(1, 1, 3, 3)
    assert rgb_to_y(grey) is grey


def test_identical_images_give_ssim_one_and_psnr_inf(pair):
    _, target = pair
    assert ssim(target, target) == pytest.approx(1.0)
    assert psnr(target, target) == math.inf  # kept from torchmetrics: a finite cap would bias averages


def test_quality_states_both_protocols(pair):
    q = quality(*pair, crop_border=2)
    assert list(q) == ["psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"]
    assert all(isinstance(v, float) for v in q.values())
    assert "Y channel" in PROTOCOL and "crop_border" in PROTOCOL


def test_masked_psnr_matches_numpy_on_masked_pixels(pair):
    pred, target = pair
    mask = np.zeros(pred.shape[:2], dtype=bool)
    mask[8:20, 10:30] = True
    expected = _np_psnr(pred[mask] / 255.0, target[mask] / 255.0)
    assert masked_psnr(pred, target, mask) == pytest.approx(expected, abs=1e-4)


def test_errors_name_the_problem(pair):
    pred, target = pair
    with pytest.raises(ConfigError, match="no pixel"):
        masked_psnr(pred, target, np.zeros(pred.shape[:2], dtype=bool))
    with pytest.raises(ConfigError, match=r"\(32, 40, 3\).*\(30, 40, 3\)"):
        psnr(pred, target[:30])
    with pytest.raises(ConfigError, match=r"\(32, 40, 3\).*\(32, 39, 3\)"):
        ssim(pred, target[:, :39])
    with pytest.raises(ConfigError, match="channel"):
        psnr(pred, target, channel="lab")
    with pytest.raises(ConfigError, match="leaves nothing"):
        shave(torch.zeros(1, 1, 4, 4), 2)


def test_gram_distance_zero_on_identical_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 8, 4, 4, generator=g)]
    b = [torch.randn(1, 4, 6, 6, generator=g), torch.randn(1, 8, 2, 3, generator=g)]
    assert gram_distance(a, a) == 0.0
    assert gram_distance(a, b) > 0.0
    assert gram_distance(a, b) == pytest.approx(gram_distance(b, a), rel=1e-12)
    # one layer by hand: G = F F^T / (C H W)
    f0, f1 = a[0].reshape(4, -1).double(), b[0].reshape(4, -1).double()
    d = ((f0 @ f0.T / (4 * 64) - f1 @ f1.T / (4 * 36)) ** 2).sum().item()
    assert gram_distance(a[:1], b[:1]) == pytest.approx(d, rel=1e-10)
    with pytest.raises(ConfigError):
        gram_distance(a, b[:1])
