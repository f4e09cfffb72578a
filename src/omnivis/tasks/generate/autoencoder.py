"""Autoencoder and VAE: the nets a bundle holds, encoding and decoding (training: ``modules.py``)."""

from __future__ import annotations

import torch

from omnivis.models.generative.autoencoder import AutoEncoder
from omnivis.models.generative.vae import VAE
from omnivis.tasks.generate.config import GenerateConfig
from omnivis.tasks.generate.spec import MethodSpec, SampleOptions


def net_config(config: GenerateConfig, num_classes: int) -> dict:
    return {"img_size": config.img_size, "channels": config.channels, "width": config.width,
            "latent_dim": config.latent_dim, "num_classes": num_classes if config.conditional else 0}


def build_ae(net: dict) -> AutoEncoder:
    return AutoEncoder(net["img_size"], net["channels"], net["width"], net["latent_dim"], net["num_classes"])


def build_vae(net: dict) -> VAE:
    return VAE(net["img_size"], net["channels"], net["width"], net["latent_dim"], net["num_classes"])


def encode_ae(model, images: torch.Tensor) -> torch.Tensor:
    return model.encode(images)


def encode_vae(model, images: torch.Tensor) -> torch.Tensor:
    return model.encode(images)[0]  # the posterior mean


def random_latent(model, net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, net["latent_dim"]), generator=generator)


def decode(model, net: dict, latents, labels, options: SampleOptions) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.decode(latents.to(device), labels.to(device) if labels is not None else None).clamp(-1.0, 1.0)


def sample_vae(model, net: dict, n: int, labels, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    return decode(model, net, random_latent(model, net, n, generator), labels, options)


AE = MethodSpec(name="ae", net_config=net_config, build=build_ae, encode=encode_ae, decode=decode,
                no_sample_hint="an ae has no prior to sample from; use omnivis interpolate, or train --method vae")
VAE_SPEC = MethodSpec(name="vae", net_config=net_config, build=build_vae, sample=sample_vae,
                      encode=encode_vae, random_latent=random_latent, decode=decode)
