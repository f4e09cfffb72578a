"""Diffusion: the UNet a bundle holds and its samplers (training, DDPM epsilon prediction: ``modules.py``).

A text-conditioned bundle (``net["text_dim"]`` > 0) holds a ``TextConditionedUNet``; its condition is
a (n, D) tensor of text embeddings where a class-conditional one takes (n,) class indices.
"""

from __future__ import annotations

import torch

from omnivis.models.generative.text_unet import TextConditionedUNet, text_diffusion_sample
from omnivis.models.generative.unet import (
    build_sampler,
    build_train_scheduler,
    build_unet,
    diffusion_sample,
)
from omnivis.tasks.generate.config import GenerateConfig
from omnivis.tasks.generate.spec import MethodSpec, SampleOptions


def net_config(config: GenerateConfig, num_classes: int, text_dim: int = 0) -> dict:
    """The net dict of the bundle; ``text_dim`` > 0 (the text encoder's D) for a text-conditioned net."""
    scheduler = build_train_scheduler(config.num_train_timesteps, config.beta_schedule)
    net = {"img_size": config.img_size, "channels": config.channels, "width": config.width,
           "num_classes": num_classes if config.conditional else 0, "scheduler": dict(scheduler.config)}
    if text_dim:
        net["text_dim"] = int(text_dim)
        net["film"] = True  # absent in bundles made before: those shift only (``TextConditionedUNet``)
    return net


def build(net: dict):
    if net.get("text_dim"):
        return TextConditionedUNet(net["img_size"], net["channels"], net["width"], net["text_dim"],
                                   film=bool(net.get("film", False)))
    return build_unet(net["img_size"], net["channels"], net["width"], net["num_classes"])


def _noise(net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, net["channels"], net["img_size"], net["img_size"]), generator=generator)


def sample(model, net: dict, n: int, labels, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    device = next(model.parameters()).device
    noise = _noise(net, n, generator).to(device)
    return decode(model, net, noise, labels, options, generator)


def random_latent(model, net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return _noise(net, n, generator)


def decode(model, net: dict, latents, labels, options: SampleOptions, generator=None) -> torch.Tensor:
    """``labels``: (n,) class indices, (n, D) text embeddings (a text net: required), or None."""
    device = next(model.parameters()).device
    scheduler = build_sampler(options.sampler, net["scheduler"])
    guidance = options.guidance if labels is not None else 1.0
    labels = labels.to(device) if labels is not None else None
    if net.get("text_dim"):
        if labels is None:
            raise ValueError("a text-conditioned diffusion needs (n, D) text embeddings")
        return text_diffusion_sample(model, scheduler, latents.to(device), options.steps, labels, guidance, generator)
    return diffusion_sample(model, scheduler, latents.to(device), options.steps, labels, guidance, generator)


SPEC = MethodSpec(name="diffusion", net_config=net_config, build=build, sample=sample,
                  random_latent=random_latent, decode=lambda m, net, z, y, o: decode(m, net, z, y, o))
