"""The diffusion UNet (diffusers ``UNet2DModel`` built from a config), its schedulers and sampler.

The UNet predicts the noise ``eps`` in ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``; schedulers
(DDPM, DDIM, DPM-Solver++) turn predictions into steps. Class conditioning uses a class embedding
with one extra "null" class (index ``num_classes``) for classifier-free guidance (Ho & Salimans
2022): ``eps = eps_null + g * (eps_class - eps_null)``.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from omnivis.models.generative import check_power_of_two

SAMPLERS = ("ddim", "dpm", "ddpm")


def build_unet(img_size: int, channels: int, width: int = 32, num_classes: int = 0, attention: bool = True,
               class_embed_type: str | None = None, time_scale_shift: str = "default") -> UNet2DModel:
    """A 3-level UNet (widths w, 2w, 2w; attention at the lowest level) for ``img_size`` >= 8.

    ``class_embed_type="identity"`` (with ``num_classes`` 0) makes ``class_labels`` a (B, 4w) vector
    added to the timestep embedding as it is: the hook text conditioning uses (``text_unet.py``).
    ``time_scale_shift="scale_shift"`` makes that embedding scale and shift each ResNet block's
    normalized features (FiLM) where ``"default"`` only adds it.
    """
    check_power_of_two(img_size, 2, "diffusion")
    if img_size < 8:
        raise ValueError(f"diffusion: img_size must be >= 8, got {img_size}")
    down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=img_size, in_channels=channels, out_channels=channels, block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=down, up_block_types=up, layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
        num_class_embeds=num_classes + 1 if num_classes else None, class_embed_type=class_embed_type,
        resnet_time_scale_shift=time_scale_shift,
    )


def build_train_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type="epsilon",
                         clip_sample=True)


def build_sampler(name: str, train_scheduler_config: dict):
    """``ddim`` (eta 0, deterministic), ``dpm`` (DPM-Solver++ 2M) or ``ddpm`` (ancestral), sharing the betas.

    DPM-Solver gets ``thresholding`` with ``sample_max_value=1``: its predicted ``x_0`` is clamped to
    [-1, 1] as ``clip_sample`` does for DDIM and DDPM. Without it, its first step at t=999 of the
    cosine schedule (``abar`` ~ 0) divides by ``sqrt(abar)`` and the samples are noise (FID 96 vs 5
    on digits).
    """
    if name == "ddim":
        return DDIMScheduler.from_config(train_scheduler_config)
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(train_scheduler_config, algorithm_type="dpmsolver++",
                                                        thresholding=True, sample_max_value=1.0)
    if name == "ddpm":
        return DDPMScheduler.from_config(train_scheduler_config)
    raise ValueError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")


@torch.no_grad()
def diffusion_sample(
    unet: UNet2DModel,
    scheduler,
    noise: torch.Tensor,
    steps: int,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` (B, C, H, W) in ``steps`` scheduler steps -> (B, C, H, W) in [-1, 1].

    Args:
        labels: (B,) class indices for a conditional UNet (None: unconditional).
        guidance: classifier-free guidance scale; 1 uses the conditional prediction alone.
        generator: CPU generator for the stochastic (DDPM) steps.
    """
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    null = None
    if labels is not None and guidance != 1.0:
        null = torch.full_like(labels, unet.config.num_class_embeds - 1)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        if null is None:
            eps = unet(inp, t, class_labels=labels).sample
        else:
            both = unet(torch.cat([inp, inp]), t, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x.clamp(-1.0, 1.0)
