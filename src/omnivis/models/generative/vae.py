"""Variational autoencoder (Kingma & Welling 2014) on the convolutional encoder/decoder.

The encoder predicts ``(mu, logvar)`` of q(z|x); training minimizes
``||x - dec(z)||^2 + kl_weight * KL(q(z|x) || N(0, I))`` with ``z = mu + sigma * eps``.
Sampling decodes ``z ~ N(0, I)``.
"""

from __future__ import annotations

import torch
from torch import nn

from omnivis.models.generative.autoencoder import ConvDecoder, ConvEncoder


class VAE(nn.Module):
    def __init__(self, img_size: int, channels: int, width: int = 32, latent_dim: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(img_size, channels, width, 2 * latent_dim)
        self.decoder = ConvDecoder(img_size, channels, width, latent_dim, num_classes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> mu, logvar, each (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z, labels)

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None, kl_weight: float) -> dict[str, torch.Tensor]:
        """Per-image summed reconstruction error and KL, averaged over the batch."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = (self.decode(z, labels) - x).pow(2).flatten(1).sum(1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return {"loss": recon + kl_weight * kl, "recon": recon, "kl": kl}
