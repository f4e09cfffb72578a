"""The text-conditioned diffusion UNet and its classifier-free guidance sampler.

A frozen sentence embedding (``omnivis.models.text``, (B, D) unit vectors) is projected by a small MLP
to the UNet's time-embedding size (4 x width) and added to the timestep embedding through diffusers'
own class-embedding path (``class_embed_type="identity"``). With ``film`` (new bundles) every ResNet
block turns that sum into a per-channel scale and shift of its normalized features (FiLM,
``resnet_time_scale_shift="scale_shift"``); without it (bundles made before) into a shift alone. A
scale lets the caption switch channels off, not only move them (BENCHMARKS.md (s) has the runs of
both). A learned ``null`` (D,) embedding stands for "no text": training replaces the
caption by it with probability ``cfg_dropout``, and sampling mixes both predictions (Ho & Salimans
2022): ``eps = eps_null + g * (eps_text - eps_null)``.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn

from omnivis.models.generative.unet import build_unet


class TextConditionedUNet(nn.Module):
    """``UNet2DModel`` (as ``build_unet``) + a text projection + the learned null text.

    Args:
        img_size: square size (8, 16, 32 ...).
        channels: image channels C.
        width: base channel width w; the time embedding is 4w wide.
        text_dim: size D of the text embeddings.
        film: the conditioning scales and shifts each block's features (else it only shifts them).
    """

    def __init__(self, img_size: int, channels: int, width: int, text_dim: int, attention: bool = True,
                 film: bool = False) -> None:
        super().__init__()
        if text_dim < 1:
            raise ValueError(f"text_dim must be >= 1, got {text_dim}")
        self.unet = build_unet(img_size, channels, width, 0, attention, class_embed_type="identity",
                               time_scale_shift="scale_shift" if film else "default")
        embed = 4 * width  # UNet2DModel's time_embed_dim
        self.text_proj = nn.Sequential(nn.Linear(text_dim, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.null = nn.Parameter(torch.zeros(text_dim))
        self.text_dim = text_dim

    def null_text(self, n: int) -> torch.Tensor:
        """(n, D): the "no text" embedding, for classifier-free guidance."""
        return self.null.unsqueeze(0).expand(n, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, text: torch.Tensor) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: (B, C, H, W) noisy images.
            t: (B,) or scalar timesteps.
            text: (B, D) text embeddings (rows may be :meth:`null_text`).

        Returns:
            (B, C, H, W) predicted noise ``eps``.
        """
        if text.ndim != 2 or text.shape[1] != self.text_dim or text.shape[0] != x.shape[0]:
            raise ValueError(f"text must be ({x.shape[0]}, {self.text_dim}), got {tuple(text.shape)}")
        return self.unet(x, t, class_labels=self.text_proj(text.to(x.dtype))).sample


@torch.no_grad()
def text_diffusion_sample(
    model: TextConditionedUNet,
    scheduler,
    noise: torch.Tensor,
    steps: int,
    text: torch.Tensor,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` (B, C, H, W) conditioned on ``text`` (B, D) -> (B, C, H, W) in [-1, 1].

    With ``guidance`` != 1 each step runs the text and the null rows as one batch of 2B and mixes them:
    ``eps = eps_null + g * (eps_text - eps_null)``; with 1 it runs the text rows alone.

    Args:
        scheduler: a diffusers scheduler (``build_sampler``).
        generator: CPU generator for the stochastic (DDPM) steps.
    """
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    text = text.to(noise.device)
    both = None if guidance == 1.0 else torch.cat([text, model.null_text(len(text)).to(text)])
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        if both is None:
            eps = model(inp, t, text)
        else:
            cond, uncond = model(torch.cat([inp, inp]), t, both).chunk(2)
            eps = uncond + guidance * (cond - uncond)
        kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x.clamp(-1.0, 1.0)
