"""An image tower that maps images into a frozen text encoder's embedding space (LiT).

Zhai et al. 2022 ("LiT: Zero-Shot Transfer with Locked-image text Tuning") lock one tower and train
the other; here the text tower is the one locked (a sentence-transformers model, ``models/text.py``),
so a small image backbone learns to land where a caption's embedding lies, and can then be asked
about captions it never saw paired with an image (zero-shot labels, text search). The head is one
linear map, as in LiT and CLIP; the learned temperature is CLIP's ``logit_scale`` (initial 1/0.07,
clamped at 100).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from omnivis.models.backbones import Backbone

MAX_LOGIT_SCALE = 100.0


class AlignModel(nn.Module):
    """A backbone, a linear projection to the text embedding size, and the similarity temperature.

    Keys are ``backbone.model.*``, ``head.*`` and ``logit_scale``, like every task model, so the
    backbone of an align bundle loads into classify, detect or segment (``--init-from``) and back.
    """

    def __init__(self, backbone: Backbone, text_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized images -> (B, D) unit vectors in the text embedding space."""
        return nn.functional.normalize(self.head(self.backbone.forward_pooled(images)), dim=1)

    def scale(self) -> torch.Tensor:
        """The logit scale exp(s), at most 100 (CLIP's clamp keeps the softmax from saturating)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def contrastive_loss(images: torch.Tensor, texts: torch.Tensor, positives: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between (B, D) image and (B, D) text unit vectors.

    ``positives`` (B, B) bool says which texts describe which images (the diagonal, and any text of
    the batch that is also one of image i's captions): they share the target mass, so a batch that
    holds "a red circle" for two red circles does not push a matching pair apart.
    """
    logits = scale * images @ texts.T
    right = positives.float()
    image_to_text = nn.functional.cross_entropy(logits, right / right.sum(dim=1, keepdim=True))
    text_to_image = nn.functional.cross_entropy(logits.T, right.T / right.T.sum(dim=1, keepdim=True))
    return (image_to_text + text_to_image) / 2
