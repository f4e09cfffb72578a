"""Degradations and training crops: what the networks learn to undo must be exactly what was asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivis.data.degrade import (
    CONDITION_SIZE,
    Degradation,
    bicubic_downscale,
    cell_masks,
    degrade,
    opencv_inpaint,
    random_mask,
    scored_degradation,
)
from omnivis.data.edit_crops import EditCropDataset
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.errors import ConfigError


def _smooth(h: int = 96, w: int = 128) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * torch.sin(3 * x + 2 * y)])


def test_gaussian_noise_has_the_asked_sigma():
    clean = torch.full((3, 256, 256), 0.5)  # mid-grey: no clipping, so the noise is exactly Gaussian
    noisy = degrade(clean, Degradation(op="denoise", sigma=25.0), np.random.default_rng(0)).image
    std = float((noisy - clean).std() * 255)
    assert abs(std - 25.0) < 0.5  # 196,608 draws: the estimate's spread is ~0.04; 8-bit rounding adds ~0.3 / 25


def test_degradations_are_a_function_of_the_seed():
    clean = _smooth()
    for op in ("denoise", "inpaint", "enhance"):
        d = Degradation(op=op, noise="realistic" if op == "denoise" else "gaussian")
        a = degrade(clean, d, np.random.default_rng(7))
        b = degrade(clean, d, np.random.default_rng(7))
        c = degrade(clean, d, np.random.default_rng(8))
        assert torch.equal(a.image, b.image), op
        assert not torch.equal(a.image, c.image), op


def test_superres_degradation_is_antialiased_bicubic_on_8_bit_levels():
    clean = _smooth()
    small = degrade(clean, Degradation(op="superres", scale=4), np.random.default_rng(0)).image
    assert small.shape == (3, 24, 32)
    assert torch.equal(small, torch.round(bicubic_downscale(clean, 4).clamp(0, 1) * 255) / 255)


def test_holes_cover_5_to_40_percent_and_cells_bound_their_size():
    rng = np.random.default_rng(0)
    for kind in ("free-form", "box", "mixed"):
        coverage = [random_mask(64, 64, kind, rng).mean() for _ in range(30)]
        assert 0.05 <= min(coverage) and max(coverage) <= 0.40, kind
    big = cell_masks(256, 320, "box", 64, rng)
    assert big.any() and big.mean() <= 0.40
    clean = _smooth(128, 128)
    state = rng.bit_generator.state
    holes = degrade(clean, Degradation(op="inpaint", mask_cell=64), rng)
    known = ~holes.mask[0].bool()
    assert torch.allclose(holes.image[:, known], clean[:, known], atol=0.5 / 255)  # known pixels kept (8-bit)
    # the holes hold the mean of OpenCV's Telea and Navier-Stokes fills of the image with its holes
    # zeroed (halves rounded up): the guess the network refines
    zeroed = ((clean * (1 - holes.mask)).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    fills = [opencv_inpaint(zeroed, holes.mask[0].numpy(), method).astype(int) for method in ("telea", "ns")]
    mean = torch.from_numpy(((fills[0] + fills[1] + 1) // 2).astype(np.uint8)).permute(2, 0, 1).float() / 255
    assert torch.equal(holes.image, mean) and not np.array_equal(fills[0], fills[1])
    # bundles from before the fill was chosen keep the Telea fill their network learned to correct
    old = Degradation.from_dict({"op": "inpaint", "mask_cell": 64})
    assert old.fill == "telea" and Degradation(op="inpaint").fill == "telea+ns"
    replay = np.random.default_rng()
    replay.bit_generator.state = state
    again = degrade(clean, old, replay)
    assert torch.equal(again.mask, holes.mask)
    assert torch.equal(again.image, torch.from_numpy(fills[0].astype(np.uint8)).permute(2, 0, 1).float() / 255)


def test_enhance_darkens_and_gives_whole_image_statistics():
    clean = _smooth()
    dark = degrade(clean, Degradation(op="enhance"), np.random.default_rng(3))
    assert dark.image.mean() < 0.75 * clean.mean()
    assert dark.condition.shape == (CONDITION_SIZE,)
    assert torch.allclose(dark.condition[:3], dark.image.mean(dim=(1, 2)))


def test_blind_denoising_is_scored_at_sigma():
    blind = Degradation(op="denoise", noise="blind", sigma=15.0)
    assert scored_degradation(blind) == Degradation(op="denoise", noise="gaussian", sigma=15.0)


@pytest.mark.parametrize("settings, message", [
    (dict(op="sharpen"), "unknown edit op"), (dict(op="superres", scale=5), "scale must be"),
    (dict(op="denoise", scale=2), "superres only"), (dict(op="denoise", noise="pink"), "unknown noise"),
])
def test_bad_degradations_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        Degradation(**settings)


def _photos(count: int = 3) -> ClassificationData:
    rng = np.random.default_rng(0)
    samples = [ImageSample(rng.integers(0, 256, (50 + 10 * i, 70, 3), dtype=np.uint8), -1, f"p{i}")
               for i in range(count)]
    return ClassificationData(samples, [], "test")


@pytest.mark.parametrize("op, scale, shapes", [
    ("superres", 2, ((3, 16, 16), (3, 32, 32))), ("denoise", 1, ((3, 32, 32), (3, 32, 32))),
    ("inpaint", 1, ((3, 32, 32), (3, 32, 32))), ("enhance", 1, ((3, 32, 32), (3, 32, 32))),
])
def test_crops_have_the_ops_shapes_and_depend_on_epoch_and_index_only(op, scale, shapes):
    dataset = EditCropDataset(_photos(), Degradation(op=op, scale=scale), crop_size=32, crops_per_image=4, seed=1)
    assert len(dataset) == 12
    given, clean, mask, condition = dataset[(0, 5)]
    assert (tuple(given.shape), tuple(clean.shape)) == shapes
    assert mask.shape == (1, 32, 32) and condition.shape == (CONDITION_SIZE,)
    again = dataset[(0, 5)]
    assert all(torch.equal(a, b) for a, b in zip(dataset[(0, 5)], again))
    assert not torch.equal(dataset[(1, 5)][1], clean)  # another epoch, another crop
    assert float(clean.min()) >= 0 and float(clean.max()) <= 1


def test_photos_smaller_than_a_crop_are_enlarged():
    small = ClassificationData([ImageSample(np.full((20, 24, 3), 128, np.uint8), -1, "tiny")], [], "test")
    given, clean, _, _ = EditCropDataset(small, Degradation(op="denoise"), 32, 1)[(0, 0)]
    assert clean.shape == (3, 32, 32) and torch.allclose(clean, torch.full_like(clean, 128 / 255))
