"""MAE: hide most patches of an image and reconstruct their pixels from the visible rest.

He et al., 2021 (https://arxiv.org/abs/2111.06377). The encoder (the timm ViT being pretrained,
wrapped by lightly's ``MaskedVisionTransformerTIMM``) sees only the kept patches; a small decoder
(lightly's ``MaskedVisionTransformerDecoderTIMM``) gets them back in place, mask tokens elsewhere,
and predicts every masked patch's pixels. Loss: mean squared error on the masked patches only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.modules import (
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
)
from lightly.models.utils import (
    get_at_index,
    patchify,
    random_token_mask,
    set_at_index,
    unpatchify,
)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from omnivis.errors import ConfigError
from omnivis.models.backbones import Backbone
from omnivis.tasks.pretrain.base import PretrainMethod


class MAE(PretrainMethod):
    """Masked autoencoder over a timm ``VisionTransformer`` backbone.

    Args:
        backbone: a backbone whose timm model is a ``VisionTransformer`` with square patches.
        mask_ratio: fraction of patches hidden from the encoder.
        decoder_dim, decoder_depth, decoder_heads: the (small) decoder's size.

    Raises:
        ConfigError: the backbone is not a ViT, or its image size is not a multiple of its patch.
    """

    def __init__(
        self, backbone: Backbone, mask_ratio: float, decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4
    ) -> None:
        super().__init__()
        vit = backbone.model
        if not isinstance(vit, VisionTransformer):
            raise ConfigError(
                f"mae needs a ViT backbone (timm VisionTransformer, e.g. omnivis_vit_tiny, vit_tiny_patch16_224); "
                f"'{backbone.name}' is a {type(vit).__name__}. Use --method simclr, dino or rotation for it."
            )
        patch = vit.patch_embed.patch_size
        grid = vit.patch_embed.grid_size
        if patch[0] != patch[1] or grid[0] != grid[1]:
            raise ConfigError(f"mae needs square patches and images; '{backbone.name}' has patches {patch}, grid {grid}")
        img_size = tuple(vit.patch_embed.img_size or ())
        if img_size and img_size[0] != grid[0] * patch[0]:
            raise ConfigError(
                f"mae: img_size {img_size[0]} is not a multiple of '{backbone.name}''s patch size {patch[0]}"
            )
        self.backbone = backbone
        self.mask_ratio = mask_ratio
        self.patch_size = int(patch[0])
        self.num_patches = int(vit.patch_embed.num_patches)
        self.num_prefix = int(vit.num_prefix_tokens)
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        self.encoder.mask_token.requires_grad_(False)  # the encoder never sees masked tokens
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.num_patches, embed_dim=decoder_dim, depth=decoder_depth, num_heads=decoder_heads,
            num_prefix_tokens=self.num_prefix, mlp_ratio=2.0,
        )
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * backbone.in_chans)

    @property
    def num_masked(self) -> int:
        """Patches hidden per image: ``random_token_mask`` keeps ``int(N * (1 - mask_ratio))``."""
        return self.num_patches - int(self.num_patches * (1 - self.mask_ratio))

    def masks(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Random patch masks from torch's RNG.

        Returns:
            keep: (B, K) indices of visible patches, mask: (B, M) indices of hidden ones, both in
            [0, num_patches) (prefix tokens not counted); K + M = num_patches.
        """
        keep, mask = random_token_mask((batch_size, self.num_patches), self.mask_ratio, mask_class_token=True, device=device)
        return keep, mask

    def predict_masked(self, images: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images and patch indices -> (B, M, patch*patch*C) predicted masked patches."""
        batch = images.shape[0]
        prefix = torch.arange(self.num_prefix, device=images.device).expand(batch, self.num_prefix)
        idx_keep = torch.cat([prefix, keep + self.num_prefix], dim=1)
        idx_mask = mask + self.num_prefix
        encoded = self.decoder_embed(self.encoder.encode(images, idx_keep=idx_keep))  # (B, P + K, D_dec)
        tokens = encoded.new_zeros(batch, self.num_prefix + self.num_patches, encoded.shape[-1])
        tokens = set_at_index(tokens, idx_keep, encoded)
        decoded = self.decoder(tokens, idx_mask=idx_mask)  # mask tokens at idx_mask, (B, P + N, D_dec)
        return self.decoder_pred(get_at_index(decoded, idx_mask))

    def training_loss(self, views: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """views: (B, C, H, W); logs the realized masking ratio (rounding keeps it near ``mask_ratio``)."""
        keep, mask = self.masks(views.shape[0], views.device)
        pred = self.predict_masked(views, keep, mask)
        target = get_at_index(patchify(views, self.patch_size), mask)
        return F.mse_loss(pred, target), {"train/mask_ratio": mask.shape[1] / self.num_patches}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (masked input with hidden patches zeroed, reconstruction with the visible
        patches pasted back), both (B, C, H, W) in the input's normalized space."""
        keep, mask = self.masks(images.shape[0], images.device)
        patches = patchify(images, self.patch_size)
        masked = set_at_index(patches, mask, torch.zeros_like(get_at_index(patches, mask)))
        recon = set_at_index(patches, mask, self.predict_masked(images, keep, mask).to(patches.dtype))
        channels = images.shape[1]
        return unpatchify(masked, self.patch_size, channels), unpatchify(recon, self.patch_size, channels)
