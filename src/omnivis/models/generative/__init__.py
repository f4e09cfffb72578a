"""Generative networks (no Lightning): autoencoders, VAE, VQ-VAE + code prior, GAN, diffusion UNet.

Each file holds one small net; the diffusers/transformers classes are built from a config here,
never downloaded. ``ema_update`` is the one exponential-moving-average rule every method shares.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """``ema = d * ema + (1 - d) * model`` with ``d = min(decay, (1 + step) / (10 + step))``.

    The warm-up keeps a short run's EMA close to the trained weights instead of the initial ones.
    Buffers (batch-norm statistics) are copied as they are.
    """
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def check_power_of_two(img_size: int, smallest: int, where: str) -> int:
    """Levels of 2x down-sampling from ``img_size`` to ``smallest``; other sizes are a ValueError."""
    levels, size = 0, img_size
    while size > smallest and size % 2 == 0:
        size //= 2
        levels += 1
    if size != smallest:
        raise ValueError(f"{where}: img_size must be {smallest} times a power of two (8, 16, 32, 64 ...), got {img_size}")
    return levels
