"""A plain convolutional autoencoder with a vector latent, optionally class-conditional.

The encoder halves the resolution down to 4 x 4 (stride-2 convs), then a linear layer gives the
latent; the decoder mirrors it (nearest up-sampling + conv), ending in ``tanh`` for [-1, 1] images.
"""

from __future__ import annotations

import torch
from torch import nn

from omnivis.models.generative import check_power_of_two


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class ConvEncoder(nn.Module):
    """(B, C, H, W) in [-1, 1] -> (B, out_dim); H = W = 4 * 2^k."""

    def __init__(self, img_size: int, channels: int, width: int, out_dim: int) -> None:
        super().__init__()
        levels = check_power_of_two(img_size, 4, "autoencoder")
        layers, cin = [_block(channels, width, 1)], width
        for i in range(levels):
            cout = width * min(2 ** (i + 1), 4)
            layers.append(_block(cin, cout, 2))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * 16, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))


class ConvDecoder(nn.Module):
    """(B, latent_dim) [+ class label] -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, img_size: int, channels: int, width: int, latent_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        levels = check_power_of_two(img_size, 4, "autoencoder")
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        chans = [width * min(2 ** (i + 1), 4) for i in range(levels)][::-1] + [width]
        self.start = chans[0]
        self.fc = nn.Linear(latent_dim, chans[0] * 16)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _block(cin, cout, 1)]
        self.net = nn.Sequential(*layers, nn.Conv2d(chans[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this decoder is class-conditional: labels are needed")
            z = z + self.embed(labels)
        return self.net(self.fc(z).view(-1, self.start, 4, 4))  # -1: the batch stays dynamic in an export


class AutoEncoder(nn.Module):
    """Deterministic autoencoder: ``encode`` (B, C, H, W) -> (B, D), ``decode`` back."""

    def __init__(self, img_size: int, channels: int, width: int = 32, latent_dim: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(img_size, channels, width, latent_dim)
        self.decoder = ConvDecoder(img_size, channels, width, latent_dim, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z, labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x), labels)
