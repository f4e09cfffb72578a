"""Tiled image-to-image inference: exact against one whole-image pass when context covers the network's
receptive radius, seamless when it does not, bounded network inputs, and one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from omnivis.errors import ConfigError
from omnivis.inference.tiling import (
    count_tiles,
    tile_for_budget,
    tiled_apply,
    tiled_memory,
    to_chw_tensor,
    to_hwc_array,
)


def amplified(net: nn.Sequential, gain: float) -> nn.Sequential:
    """``net`` with every conv's weights times ``gain``: the default init squashes the output to within a
    gray level or two of constant, where even a wrong tiling scores over 50 dB; with gain 4 the output
    spreads over tens of gray levels and tiles cut without context score about 25 dB."""
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(gain)
    return net.eval()


def conv_net(c_in: int = 3, c_out: int = 3, seed: int = 0, gain: float = 4) -> nn.Sequential:
    """Three stacked 3x3 convs (receptive radius 3), random init, sigmoid output."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(c_in, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
              nn.Conv2d(8, c_out, 3, padding=1), nn.Sigmoid()]
    return amplified(nn.Sequential(*layers), gain)


def upscale_net(c: int = 3, seed: int = 0, gain: float = 4) -> nn.Sequential:
    """x2 super-resolution: two 3x3 convs (receptive radius 2 input pixels) and a PixelShuffle."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, c * 4, 3, padding=1), nn.PixelShuffle(2),
              nn.Sigmoid()]
    return amplified(nn.Sequential(*layers), gain)


class ResidualNet(nn.Module):
    """Passes a smooth input through (so the output has a gradient) plus a radius-3 random conv body whose
    zero padding at a tile edge makes a visible seam when tiles are cut without context."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.body = conv_net(seed=seed, gain=1)[:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(4 * (x - 0.5) + 3 * self.body(x))


def single_pass(net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The reference: the whole image through the network at once, written without tiled_apply."""
    with torch.inference_mode():
        out = net(image[None].float() / 255)[0]
    return (out * 255).clamp(0, 255).round().to(torch.uint8)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = np.mean((a.numpy().astype(np.float64) - b.numpy().astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def random_image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Wraps a network and records the input shape of every call."""

    def __init__(self, net) -> None:
        self.net, self.shapes = net, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


@pytest.mark.parametrize("batch", [1, 4])
def test_equals_single_pass_when_context_covers_receptive_radius(batch):
    net, image = conv_net(), random_image(3, 70, 53)
    out = tiled_apply(net, image, tile=32, context=8, blend=4, batch=batch)
    assert out.shape == (3, 70, 53) and out.dtype == torch.uint8
    assert psnr(out, single_pass(net, image)) >= 50


def test_scale_two_equals_single_pass():
    net, image = upscale_net(), random_image(3, 70, 53, seed=1)
    out = tiled_apply(net, image, scale=2, tile=32, context=8, blend=4, batch=2)
    assert out.shape == (3, 140, 106)
    assert psnr(out, single_pass(net, image)) >= 50


def test_nearest_upscale_is_exact_for_any_grid():
    """A radius-0 network: every tile, crop and weight must land exactly where it belongs."""
    image = random_image(2, 37, 29, seed=2)
    nearest = nn.Upsample(scale_factor=4, mode="nearest")
    out = tiled_apply(nearest, image, scale=4, tile=10, context=0, blend=3, batch=3)
    assert torch.equal(out, image.repeat_interleave(4, 1).repeat_interleave(4, 2))


def seam_ratio(out: torch.Tensor, bounds: list[int], blend: int) -> float:
    """The largest mean |difference| between adjacent rows (or columns) in the band around a tile
    boundary, over the median one in the whole image: about 1 where nothing shows at the boundaries."""
    o = out.numpy().astype(np.float64)
    ratios = []
    for axis in (1, 2):
        g = np.abs(np.diff(o, axis=axis)).mean(axis=(0, 3 - axis))  # g[k]: |line k+1 - line k|
        at_bounds = max(g[k] for b in bounds for k in range(b - blend - 1, b + blend))
        ratios.append(at_bounds / np.median(g))
    return max(ratios)


def test_blending_hides_seams_when_context_is_too_small():
    net = ResidualNet()
    y, x = np.mgrid[0:96, 0:96] / 95
    smooth = torch.from_numpy(np.stack([0.05 + 0.45 * (x + y), 0.05 + 0.9 * y, 0.95 - 0.9 * x]).astype(np.float32))
    bounds = [32, 64]  # 96 / tile 32: cores [0, 32), [32, 64), [64, 96) on both axes
    assert seam_ratio(tiled_apply(net, smooth, tile=0), bounds, 8) < 1.6  # one pass: nothing at the bounds
    naive = tiled_apply(net, smooth, tile=32, context=0, blend=0)
    assert seam_ratio(naive, bounds, 0) > 3  # the test sees seams: tiles cut without context or blend
    blended = tiled_apply(net, smooth, tile=32, context=0, blend=8)
    assert seam_ratio(blended, bounds, 8) < 2


def test_extra_input_channel():
    net, image = conv_net(c_in=4, c_out=3), random_image(4, 45, 40, seed=3)
    out = tiled_apply(net, image, tile=16, context=4, blend=2)
    assert out.shape == (3, 45, 40)
    assert psnr(out, single_pass(net, image)) >= 50


def test_network_inputs_stay_bounded_and_calls_match_count():
    image = random_image(1, 600, 600, seed=4)
    tile, context, blend, batch = 64, 4, 4, 3
    net = Recorder(lambda x: x)
    out = tiled_apply(net, image, tile=tile, context=context, blend=blend, batch=batch)
    assert torch.equal(out, image)
    assert all(max(shape[2:]) <= tile + 2 * (context + blend) for shape in net.shapes)
    assert sum(shape[0] for shape in net.shapes) == count_tiles(600, 600, tile) == 100
    assert len(net.shapes) == math.ceil(count_tiles(600, 600, tile) / batch)


def test_tile_zero_is_one_call_with_the_whole_image():
    net = Recorder(conv_net())
    image = random_image(3, 30, 41, seed=5)
    out = tiled_apply(net, image, tile=0, blend=8)
    assert net.shapes == [(1, 3, 30, 41)]
    assert torch.equal(out, single_pass(net.net, image))


@pytest.mark.parametrize("shape", [(3, 1, 70), (3, 70, 1), (3, 1, 1), (3, 12, 9)])
def test_thin_and_small_images(shape):
    net, image = conv_net(), random_image(*shape, seed=6)
    out = tiled_apply(net, image, tile=16, context=4, blend=2)
    assert psnr(out, single_pass(net, image)) >= 50


def test_float_input_and_array_helpers():
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    chw = to_chw_tensor(array)
    assert chw.shape == (3, 20, 30)
    net = conv_net()
    from_uint8 = tiled_apply(net, chw, tile=8, context=4, blend=2, progress=True)
    from_float = tiled_apply(net, chw.float() / 255, tile=8, context=4, blend=2)
    assert torch.equal(from_uint8, from_float)
    assert np.array_equal(to_hwc_array(chw), array)
    assert to_chw_tensor(array[:, :, 0]).shape == (1, 20, 30)


def test_count_tiles():
    assert count_tiles(70, 53, 32) == 6
    assert count_tiles(64, 64, 32) == 4
    assert count_tiles(10, 1000, 0) == 1
    assert count_tiles(10, 10, 64) == 1


def test_tile_smaller_than_twice_blend_is_an_error():
    with pytest.raises(ConfigError, match="tile must be larger than twice blend"):
        tiled_apply(conv_net(), random_image(3, 8, 8), tile=15, blend=8)


def test_wrong_output_shape_names_both_shapes():
    image = random_image(3, 20, 20)
    with pytest.raises(ConfigError) as err:
        tiled_apply(lambda x: x[:, :, ::2, ::2], image, tile=0)
    assert "the network returned (1, 3, 10, 10) for a (1, 3, 20, 20) tile; expected (1, 3, 20, 20)" in str(err.value)
    with pytest.raises(ConfigError, match=r"expected \(1, 3, 40, 40\)"):
        tiled_apply(lambda x: x, image, scale=2, tile=0)


@pytest.mark.parametrize(
    "kwargs", [{"tile": -1}, {"context": 1.5}, {"blend": -2}, {"scale": 0}, {"batch": 0}, {"tile": True}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="must be an integer"):
        tiled_apply(conv_net(), random_image(3, 8, 8), **kwargs)


def test_bad_image():
    with pytest.raises(ConfigError, match="to_chw_tensor"):
        tiled_apply(conv_net(), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        tiled_apply(conv_net(), torch.zeros(8, 8, dtype=torch.uint8))


def test_image_given_in_parts_equals_the_concatenated_image():
    net, image = conv_net(c_in=4, c_out=3), random_image(4, 45, 40, seed=3)
    mask = image[3:] > 127
    whole = tiled_apply(net, torch.cat([image[:3], mask.to(torch.uint8) * 255]), tile=16, context=4, blend=2)
    assert torch.equal(tiled_apply(net, (image[:3], mask), tile=16, context=4, blend=2), whole)
    with pytest.raises(ConfigError, match="differ in size"):
        tiled_apply(net, (image[:3], mask[:, :-1]), tile=16)


def test_tiled_memory_and_tile_for_budget():
    plan = {"bytes_per_pixel": 1000, "context": 15, "blend": 8}
    # one window of (tile + 2 * (blend + context))^2 px, and 4 floats per output px of the tallest strip
    assert tiled_memory(3000, 4000, 100, **plan) == 146 * 146 * 1000 + 4 * (100 + 16) * 4000 * 4
    assert tiled_memory(3000, 4000, 256, **plan) > tiled_memory(3000, 4000, 128, **plan)
    budget = tiled_memory(3000, 4000, 112, **plan)
    tile = tile_for_budget(3000, 4000, budget, largest=256, **plan)
    assert tile == 112 and tile % 16 == 0
    assert tile_for_budget(3000, 4000, budget - 1, largest=256, **plan) == 96
    assert tile_for_budget(3000, 4000, 10**12, largest=256, **plan) == 256  # the largest, when it fits
    assert tile_for_budget(60, 50, 10**12, largest=0, **plan) == 0  # whole image stays whole
    assert tile_for_budget(3000, 4000, 1, largest=256, **plan) == 32  # nothing fits: the smallest
