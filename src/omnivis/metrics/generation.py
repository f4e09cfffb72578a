"""FID and KID (torchmetrics) in the feature space of a classifier omnivis trained on the same data.

Inception features need downloaded weights and 299 px photos; on small data sets (digits at 16 px)
the penultimate layer of a classifier trained on that data is the meaningful feature space (the
reference is named in every report). ``ClassifierFeatures`` maps generator output (float in [0, 1],
any channel count and size) into the classifier's own preprocessing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class ClassifierFeatures(nn.Module):
    """(B, C, H, W) float images in [0, 1] -> (B, F) pooled backbone features of a classifier.

    Attributes:
        num_features: F (torchmetrics reads it instead of probing with a 299 px dummy image).
    """

    def __init__(self, classifier: nn.Module, img_size: int, in_chans: int, mean, std) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.img_size, self.in_chans = img_size, in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.num_features = int(classifier.backbone.num_features)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] != self.in_chans:
            if self.in_chans == 1:
                x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x[:, :1]
            else:
                x = x[:, :1].expand(-1, self.in_chans, -1, -1)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.backbone.forward_pooled(self.preprocess(x))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.preprocess(x))


def _batches(x: torch.Tensor, size: int = 256):
    for start in range(0, len(x), size):
        yield x[start: start + size]


def fid_kid(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module, kid_subset: int = 100) -> dict:
    """FID and KID between two image sets (N, C, H, W) float in [0, 1], in ``feature``'s space.

    KID uses subsets of ``min(kid_subset, N_real, N_fake)`` images (its mean and std over subsets).
    """
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least 2 real and 2 generated images")
    fid = FrechetInceptionDistance(feature=feature, normalize=True)
    subset = min(kid_subset, len(real), len(fake))
    kid = KernelInceptionDistance(feature=feature, normalize=True, subset_size=subset, subsets=50)
    for metric in (fid, kid):
        for batch in _batches(real):
            metric.update(batch, real=True)
        for batch in _batches(fake):
            metric.update(batch, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}
