"""DDPM training of a UNet (epsilon prediction, optional class conditioning with label dropout)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from omnivis.models.generative import ema_update
from omnivis.models.generative.unet import (
    build_sampler,
    build_train_scheduler,
    build_unet,
    diffusion_sample,
)
from omnivis.tasks.common import log_training
from omnivis.tasks.generate.base import GeneratorModule, MethodSpec, SampleOptions
from omnivis.tasks.generate.config import GenerateConfig


def net_config(config: GenerateConfig, num_classes: int) -> dict:
    scheduler = build_train_scheduler(config.num_train_timesteps, config.beta_schedule)
    return {"img_size": config.img_size, "channels": config.channels, "width": config.width,
            "num_classes": num_classes if config.conditional else 0, "scheduler": dict(scheduler.config)}


def build(net: dict):
    return build_unet(net["img_size"], net["channels"], net["width"], net["num_classes"])


class DiffusionModule(GeneratorModule):
    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, build)
        self.scheduler = build_train_scheduler(config.num_train_timesteps, config.beta_schedule)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay > 0 else None

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = self.split_batch(batch)
        noise = torch.randn_like(images)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(images),), device=images.device)
        noisy = self.scheduler.add_noise(images, noise, t)
        if labels is not None:  # label dropout teaches the null class for classifier-free guidance
            drop = torch.rand(len(labels), device=labels.device) < self.config.cfg_dropout
            labels = labels.masked_fill(drop, self.net["num_classes"])
        loss = F.mse_loss(self.model(noisy, t, class_labels=labels).sample, noise)
        log_training(self, {"train/loss": loss})
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            ema_update(self.ema, self.model, self.config.ema_decay, self.global_step)

    def export_model(self):
        return self.ema if self.ema is not None else self.model


def _noise(net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, net["channels"], net["img_size"], net["img_size"]), generator=generator)


def sample(model, net: dict, n: int, labels, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    device = next(model.parameters()).device
    noise = _noise(net, n, generator).to(device)
    return decode(model, net, noise, labels, options, generator)


def random_latent(model, net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return _noise(net, n, generator)


def decode(model, net: dict, latents, labels, options: SampleOptions, generator=None) -> torch.Tensor:
    device = next(model.parameters()).device
    scheduler = build_sampler(options.sampler, net["scheduler"])
    guidance = options.guidance if labels is not None else 1.0
    labels = labels.to(device) if labels is not None else None
    return diffusion_sample(model, scheduler, latents.to(device), options.steps, labels, guidance, generator)


SPEC = MethodSpec(name="diffusion", net_config=net_config, build=build, module=DiffusionModule, sample=sample,
                  random_latent=random_latent, decode=lambda m, net, z, y, o: decode(m, net, z, y, o))
