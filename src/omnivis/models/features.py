"""Frozen backbone features: batch-norm handling of untrained or re-used weights, and extraction.

Used by :mod:`omnivis.tasks.probe`: image batches through the one ``decode_tensor`` (as training decodes) and an eval
transform, batch-norm scales and statistics made fair for a random or pretrained backbone, and the
pooled features ``(N, num_features)`` of ``Backbone.forward_pooled``. Never imports Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from rich.progress import track
from torch import nn

from omnivis.data.decode import decode_tensor
from omnivis.models.backbones import Backbone


def reset_zero_init_scales(backbone: nn.Module) -> int:
    """Set batch-norm scales that are exactly zero to 1 (a random initialization only); returns how many.

    timm initializes the last batch-norm of every residual block with scale 0 (``zero_init_last``),
    a trick that makes *training* start from identity blocks. Left in a network that is never
    trained, it switches every residual branch off: a random ResNet becomes a chain of strided 1 x 1
    shortcut convolutions whose pooled output sees only a corner of the image, and probes near
    chance however its statistics are calibrated (digits, 32 px: kNN 0.18). A random baseline
    should measure the architecture with random weights, so the scales get the ordinary batch-norm
    initialization (1), as in torchvision's default random ResNet. Trained weights are never touched.
    """
    layers = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    zero = [m for m in layers if not bool(m.weight.detach().abs().sum())]
    with torch.no_grad():
        for layer in zero:
            layer.weight.fill_(1.0)
    return len(zero)


def image_batches(
    sources: Sequence, mode: str, transform, batch_size: int, description: str = "", progress: bool = False,
    min_batch: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield (B, C, H, W) tensors through the one ``decode_tensor`` + eval transform, in order.

    Batches are near-equal (``np.array_split``), at most ``batch_size`` images unless that would
    leave one below ``min_batch``: batch-norm in train mode cannot normalize a single 1 x 1 feature
    map, and a cumulative average over equal batches is the exact mean over all images.
    """
    count = max(1, min(-(-len(sources) // batch_size), len(sources) // max(min_batch, 1)))
    chunks = [c for c in np.array_split(np.arange(len(sources)), count) if len(c)]
    if progress:
        chunks = track(chunks, description=description, total=len(chunks), transient=True)
    for chunk in chunks:
        yield torch.stack([transform(decode_tensor(sources[int(i)], mode)) for i in chunk])


def recalibrate_batchnorm(backbone: nn.Module, batches: Iterator[torch.Tensor], device: str = "cpu") -> bool:
    """Re-estimate every batch-norm layer's running statistics on ``batches``; True if it had any.

    A randomly initialized network in eval mode normalizes with mean 0 / variance 1, which does not
    match its real activations: features collapse and a random ResNet probes near chance, an unfair
    baseline. Pretrained weights carry statistics of their own training data and views, not of the
    probe's images. So for every model alike the running statistics are reset and re-estimated as a
    cumulative average (``momentum=None``) over the probe's training images, with only the batch-norm
    layers in train mode (dropout and drop-path stay off, as during extraction) and no gradients.
    The weights are untouched; momenta and the eval mode are restored afterwards.
    """
    layers = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return False
    momenta = [layer.momentum for layer in layers]
    backbone.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        with torch.no_grad():
            for batch in batches:
                backbone(batch.to(device))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        backbone.eval()
    return True


def extract_features(backbone: Backbone, batches: Iterator[torch.Tensor], device: str = "cpu") -> np.ndarray:
    """Frozen pooled features: batches of (B, C, H, W) -> (N, num_features) float32, eval mode."""
    backbone.eval()
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(backbone.forward_pooled(batch.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, backbone.num_features), np.float32)
