"""Restoration networks: they start as the classical guess, and their receptive radius is true."""

from __future__ import annotations

import pytest
import torch

from omnivis.data.degrade import bicubic_upscale
from omnivis.models.restoration import (
    InpaintNet,
    ResidualNet,
    SubPixelNet,
    build_restoration_net,
    conv_of_parts,
    upsample_conv,
)


@pytest.mark.parametrize("net, scale", [(SubPixelNet(2, 16), 2), (ResidualNet(4, 8, 2), 4), (ResidualNet(1, 8, 2), 1)])
def test_an_untrained_network_is_the_classical_guess(net, scale):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 12, 10)
    expected = bicubic_upscale(image, scale) if scale > 1 else image
    assert torch.equal(net(image), expected)  # the last layer starts at zero: training adds detail only


@pytest.mark.parametrize("net", [SubPixelNet(1, 16), ResidualNet(1, 8, 2), ResidualNet(1, 8, 3, conditioned=True)])
def test_the_receptive_radius_bounds_what_a_pixel_depends_on(net):
    torch.manual_seed(0)
    for p in net.parameters():  # leave the zero start behind, so every path carries signal
        torch.nn.init.normal_(p, std=0.3)
    image = torch.rand(1, 3, 41, 41, requires_grad=True)
    condition = torch.rand(1, 6)
    out = net(image, condition) if getattr(net, "conditioned", False) else net(image)
    out[0, :, 20, 20].sum().backward()
    touched = image.grad[0].abs().sum(0).nonzero()
    reach = int((touched - 20).abs().max())
    assert 0 < reach <= net.receptive_radius


def test_inpainting_copies_known_pixels_and_corrects_only_the_hole():
    torch.manual_seed(0)
    net = InpaintNet(width=8, blocks=2)
    image = torch.rand(1, 3, 32, 32)  # its holes hold the classical fill
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 10:24] = 1
    assert torch.equal(net(image, mask), image)  # untrained: the classical fill exactly
    torch.nn.init.normal_(net.out.weight, std=0.1)
    out = net(image, mask)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    assert not torch.allclose(out * mask, image * mask)


@pytest.mark.parametrize("height, width", [(7, 9), (8, 8), (1, 5)])
def test_upsample_conv_is_a_convolution_of_the_nearest_upsampling(height, width):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 6, height, width)
    reference = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    assert torch.allclose(upsample_conv(x, conv), reference, atol=1e-5)  # borders included


def test_conv_of_parts_is_the_convolution_of_the_concatenation():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(7, 3, 3, padding=1)
    a, b = torch.randn(1, 4, 10, 12), torch.randn(1, 3, 10, 12)
    assert torch.allclose(conv_of_parts(conv, a, b), conv(torch.cat([a, b], 1)), atol=1e-5)


def test_inpaint_network_equals_its_layers_run_as_declared():
    """The weights' layout (Upsample, Conv2d, ReLU) is what bundles store; forward runs the same
    function without the full-resolution upsampled copies."""
    torch.manual_seed(0)
    net = InpaintNet(width=8, blocks=2)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    image, mask = torch.rand(2, 3, 24, 20), (torch.rand(2, 1, 24, 20) > 0.6).float()
    s0 = net.stem(torch.cat([image, mask], 1))
    s1 = net.down1(s0)
    x = net.up1(torch.cat([net.up2(net.middle(net.down2(s1))), s1], 1))
    declared = image + net.out(torch.cat([x, s0], 1)) * mask
    assert torch.allclose(net(image, mask), declared, atol=1e-4)


def test_an_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown restoration network 'unet'"):
        build_restoration_net("unet", 1, 8, 2)
