"""DCGAN-style generator and a spectral-norm projection discriminator (Miyato & Koyama 2018).

Trained with the hinge loss: D minimizes ``relu(1 - D(x)) + relu(1 + D(G(z)))``, G minimizes
``-D(G(z))``. Class conditioning: G adds a class embedding to ``z``; D adds ``<embed(y), h>``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from omnivis.models.generative import check_power_of_two


class Generator(nn.Module):
    """(B, z_dim) [+ labels] -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, img_size: int, channels: int, width: int = 32, z_dim: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        levels = check_power_of_two(img_size, 4, "gan")
        self.z_dim = z_dim
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        chans = [width * min(2 ** (levels - i), 8) for i in range(levels + 1)]
        self.start = chans[0]
        self.fc = nn.Linear(z_dim, chans[0] * 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(chans[0]), nn.ReLU()]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(chans[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are needed")
            z = z + self.embed(labels)
        return self.net(self.fc(z).view(-1, self.start, 4, 4))  # -1: the batch stays dynamic in an export


class Discriminator(nn.Module):
    """(B, C, H, W) [+ labels] -> (B,) realness scores; every weight layer is spectrally normalized."""

    def __init__(self, img_size: int, channels: int, width: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        levels = check_power_of_two(img_size, 4, "gan")
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
        cin = width
        for i in range(levels):
            cout = width * min(2 ** (i + 1), 8)
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2)]
            cin = cout
        self.net = nn.Sequential(*layers)
        self.fc = spectral_norm(nn.Linear(cin, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, cin)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(x).sum(dim=(2, 3))
        out = self.fc(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()
