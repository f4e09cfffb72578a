from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.transforms import (
    AUGMENT_PRESETS,
    AugmentConfig,
    RandomResizedCropFlip,
    build_batch_mix,
    build_eval_transform,
    build_train_transform,
    default_mean_std,
)
from omnivis.errors import ConfigError


def _image(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (40, 60, 3) if mode == "RGB" else (40, 60)
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_eval_transform_is_resize_center_crop_normalize(mode, channels):
    mean, std = default_mean_std(channels)
    out = build_eval_transform(32, mean, std)(_image(mode))
    assert out.shape == (channels, 32, 32) and out.dtype == torch.float32
    white = build_eval_transform(8, mean, std)(Image.new(mode, (8, 8), 255 if mode == "L" else (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(mean, std)])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_every_preset_gives_the_training_shape(preset, mode, channels):
    mean, std = default_mean_std(channels)
    augment = AugmentConfig(preset=preset, rotation=10, color_jitter=0.3)
    tf = build_train_transform(24, mean, std, augment)
    torch.manual_seed(0)
    a = tf(_image(mode))
    assert a.shape == (channels, 24, 24)
    if preset != "none":
        torch.manual_seed(1)
        assert not torch.equal(a, tf(_image(mode)))  # it is random ...
    torch.manual_seed(0)
    assert torch.equal(a, tf(_image(mode)))  # ... and the draws come from torch's seeded RNG


def test_mixup_and_cutmix_give_soft_labels():
    mix = build_batch_mix(AugmentConfig(mixup=0.2, cutmix=1.0), num_classes=5)
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 5
    mixed, soft = mix(images, labels)
    assert mixed.shape == images.shape and soft.shape == (8, 5)
    assert torch.allclose(soft.sum(dim=1), torch.ones(8))
    assert build_batch_mix(AugmentConfig(), 5) is None


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown augment preset 'randaug'"):
        AugmentConfig(preset="randaug")
    with pytest.raises(ConfigError, match="scale_min"):
        AugmentConfig(scale_min=0)


def test_random_resized_crop_draws_v2s_crops_and_resizes_with_its_filter():
    """Same area and aspect ranges as v2.RandomResizedCrop, crops inside the image, v2's resize
    filter (within one grey level of its uint8 kernel), and a batch gives what one at a time gives."""
    from torchvision.transforms import v2

    torch.manual_seed(0)
    ours_crop, reference = RandomResizedCropFlip(16, scale=(0.3, 1.0)), v2.RandomResizedCrop(16, scale=(0.3, 1.0))
    ours = torch.tensor([ours_crop.draw(40, 60)[:4] for _ in range(3000)], dtype=torch.float64)
    theirs = torch.tensor([list(reference.make_params([torch.zeros(1, 40, 60)]).values()) for _ in range(3000)],
                          dtype=torch.float64)
    for crops in (ours, theirs):
        top, left, h, w = crops.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area = lambda crops: crops[:, 2] * crops[:, 3] / 2400  # noqa: E731
    assert abs(float(area(ours).mean() - area(theirs).mean())) < 0.02  # same distribution, sampled
    assert abs(float((ours[:, 3] / ours[:, 2]).log().std() - (theirs[:, 3] / theirs[:, 2]).log().std())) < 0.02

    images = torch.randint(0, 256, (5, 3, 40, 60), dtype=torch.uint8)
    flipping = RandomResizedCropFlip(24, scale=(0.05, 1.0), hflip=True)
    draws = [flipping.draw(40, 60) for _ in range(5)] + [(3, 4, 40 - 3, 60 - 4, False), (0, 0, 24, 24, True)]
    images = torch.cat([images, images[:2]])
    batch = flipping.apply(images, draws)
    for image, draw, out in zip(images, draws, batch):
        assert torch.equal(flipping.apply(image[None], [draw])[0], out)
        top, left, h, w, mirror = draw
        expected = v2.functional.resized_crop(image, top, left, h, w, [24, 24], antialias=True)
        expected = expected.flip(-1) if mirror else expected
        assert (out.int() - expected.int()).abs().max() <= 1
    large = torch.randint(0, 256, (3, 120, 100), dtype=torch.uint8)  # beyond BATCH_MAX_PIXELS: v2's kernel
    assert not flipping.batchable(120, 100) and flipping.batchable(40, 60)
    torch.manual_seed(3)
    top, left, h, w, mirror = flipping.draw(120, 100)
    torch.manual_seed(3)
    expected = v2.functional.resized_crop(large, top, left, h, w, [24, 24], antialias=True)
    assert torch.equal(flipping(large), expected.flip(-1) if mirror else expected)
    narrow = RandomResizedCropFlip(8, scale=(0.99, 1.0), ratio=(1.0, 1.0)).draw(10, 100)  # no try fits: centre
    assert narrow == (0, 45, 10, 10, False)
