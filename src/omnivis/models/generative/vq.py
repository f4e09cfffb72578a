"""VQ-VAE (van den Oord et al. 2017): diffusers' ``VQModel`` built from a config, plus code helpers.

The encoder maps (B, C, H, W) to a (B, E, H/4, W/4) grid snapped to the nearest of K codebook
vectors; the loss is reconstruction + codebook + 0.25 * commitment (diffusers' quantizer), with
the straight-through gradient. ``encode_indices``/``decode_indices`` are what the prior works on.
"""

from __future__ import annotations

import torch
from diffusers import VQModel

from omnivis.models.generative import check_power_of_two

DOWNSAMPLE = 4


def build_vqvae(img_size: int, channels: int, width: int = 32, codebook_size: int = 64, embed_dim: int = 16) -> VQModel:
    check_power_of_two(img_size, 2, "vqvae")
    if img_size < 8:
        raise ValueError(f"vqvae: img_size must be >= 8, got {img_size}")
    return VQModel(
        in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(width, 2 * width, 2 * width), layers_per_block=1,
        latent_channels=embed_dim, num_vq_embeddings=codebook_size, vq_embed_dim=embed_dim, norm_num_groups=8,
        sample_size=img_size,
    )


def vq_loss(model: VQModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reconstruction MSE plus the quantizer's codebook/commitment loss."""
    recon, commit = model(x, return_dict=False)
    mse = torch.nn.functional.mse_loss(recon, x)
    return {"loss": mse + commit, "recon": mse, "commit": commit}


@torch.no_grad()
def encode_indices(model: VQModel, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/4 * W/4) code indices in [0, K)."""
    h = model.encode(x).latents
    _, _, (_, _, indices) = model.quantize(h)
    return indices.view(len(x), -1)


@torch.no_grad()
def decode_indices(model: VQModel, indices: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid * grid) code indices -> (B, C, H, W) images in [-1, 1]."""
    dim = model.config.vq_embed_dim or model.config.latent_channels
    z = model.quantize.get_codebook_entry(indices.reshape(-1), (len(indices), grid, grid, dim))
    return model.decode(z, force_not_quantize=True).sample.clamp(-1.0, 1.0)
