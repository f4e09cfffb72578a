"""Restoration networks: they start as the classical guess, and their receptive radius is true."""

from __future__ import annotations

import pytest
import torch

from omnivis.data.degrade import bicubic_upscale
from omnivis.models.restoration import InpaintNet, ResidualNet, SubPixelNet, build_restoration_net


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


def test_an_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown restoration network 'unet'"):
        build_restoration_net("unet", 1, 8, 2)
