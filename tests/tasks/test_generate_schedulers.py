"""Our diffusion sampler steps exactly as diffusers' own pipelines do for the same UNet and noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDPMPipeline

from omnivis.models.generative.unet import build_sampler, build_train_scheduler, build_unet, diffusion_sample


@pytest.mark.parametrize("name,pipeline", [("ddim", DDIMPipeline), ("ddpm", DDPMPipeline)])
def test_sampler_matches_diffusers_pipeline(name, pipeline):
    torch.manual_seed(0)
    unet = build_unet(8, 1, width=16).eval()
    config = build_train_scheduler(100).config
    ours_noise = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    _ = torch.randn((2, 1, 8, 8), generator=generator)  # the same draws the pipeline makes first
    ours = diffusion_sample(unet, build_sampler(name, config), ours_noise, 5, generator=generator)
    pipe = pipeline(unet=unet, scheduler=build_sampler(name, config))
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"eta": 0.0} if name == "ddim" else {}
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=5, output_type="np",
                  **kwargs).images
    assert np.allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), theirs, atol=1e-5)


def test_guidance_one_is_the_conditional_prediction():
    torch.manual_seed(0)
    unet = build_unet(8, 1, width=16, num_classes=3).eval()
    config = build_train_scheduler(100).config
    noise = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([0, 2])
    plain = diffusion_sample(unet, build_sampler("ddim", config), noise, 3, labels, guidance=1.0)
    guided = diffusion_sample(unet, build_sampler("ddim", config), noise, 3, labels, guidance=3.0)
    assert plain.shape == (2, 1, 8, 8) and not torch.allclose(plain, guided)


class _NearlyPerfectDenoiser(torch.nn.Module):
    """The exact noise prediction for data that is one constant image ``c``, plus an error of 0.3 x_t.

    With ``x_t = sqrt(abar) c + sqrt(1 - abar) eps`` the true ``eps`` is known in closed form, so a
    good sampler must land near ``c``. The error term is what a trained net has; at t=999 of the
    cosine schedule it is divided by ``sqrt(abar)`` ~ 0 unless the sampler clips its ``x_0``.
    """

    def __init__(self, scheduler, c: float) -> None:
        super().__init__()
        self.abar = scheduler.alphas_cumprod
        self.c = c

    def forward(self, x, t, class_labels=None):
        a = self.abar[int(t)]
        eps = (x - a.sqrt() * self.c) / (1 - a).sqrt()
        return type("Out", (), {"sample": eps + 0.3 * x})()


@pytest.mark.parametrize("name", ["ddim", "dpm"])
def test_samplers_land_on_the_data_with_an_imperfect_denoiser(name):
    train = build_train_scheduler(1000)
    model = _NearlyPerfectDenoiser(train, c=0.5)
    noise = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    x = diffusion_sample(model, build_sampler(name, train.config), noise, 20)
    assert (x - 0.5).abs().mean() < 0.05  # unclipped DPM-Solver: 0.28
