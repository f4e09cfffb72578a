"""GAN: the generator a bundle holds and how it samples (training: ``modules.GANModule``)."""

from __future__ import annotations

import torch

from omnivis.models.generative.gan import (
    Generator,
)
from omnivis.tasks.generate.config import GenerateConfig
from omnivis.tasks.generate.spec import MethodSpec, SampleOptions


def net_config(config: GenerateConfig, num_classes: int) -> dict:
    return {"img_size": config.img_size, "channels": config.channels, "width": config.width,
            "z_dim": config.latent_dim, "num_classes": num_classes if config.conditional else 0}


def build(net: dict) -> Generator:
    return Generator(net["img_size"], net["channels"], net["width"], net["z_dim"], net["num_classes"])


def random_latent(model, net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, net["z_dim"]), generator=generator)


def decode(model, net: dict, latents, labels, options: SampleOptions) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(latents.to(device), labels.to(device) if labels is not None else None).clamp(-1.0, 1.0)


def sample(model, net: dict, n: int, labels, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    return decode(model, net, random_latent(model, net, n, generator), labels, options)


SPEC = MethodSpec(name="gan", net_config=net_config, build=build, sample=sample,
                  random_latent=random_latent, decode=decode)
