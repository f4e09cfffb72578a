"""VQ-VAE, and the autoregressive code prior over a frozen VQ-VAE bundle (vqvae-ar): nets and sampling.

Training: ``modules.VQModule`` and ``modules.PriorModule``.
"""

from __future__ import annotations

import torch
from torch import nn

from omnivis.bundle import load_bundle
from omnivis.errors import BundleError, ConfigError
from omnivis.models.generative.prior import CodePrior
from omnivis.models.generative.vq import (
    DOWNSAMPLE,
    build_vqvae,
    decode_indices,
)
from omnivis.tasks.generate.config import GenerateConfig
from omnivis.tasks.generate.spec import MethodSpec, SampleOptions


def net_config(config: GenerateConfig, num_classes: int) -> dict:
    if config.conditional:
        raise ConfigError("vqvae is unconditional; condition its prior instead (--method vqvae-ar --conditional)")
    return {"img_size": config.img_size, "channels": config.channels, "width": config.width,
            "codebook_size": config.codebook_size, "embed_dim": config.embed_dim, "num_classes": 0}


def build(net: dict):
    return build_vqvae(net["img_size"], net["channels"], net["width"], net["codebook_size"], net["embed_dim"])


# ---------------------------------------------------------------------------------------------
# vqvae-ar: a GPT prior over a trained VQ-VAE's code grid
# ---------------------------------------------------------------------------------------------


class VQWithPrior(nn.Module):
    """The frozen VQ-VAE (``vq.*``) and its code prior (``prior.*``): one self-contained bundle."""

    def __init__(self, net: dict) -> None:
        super().__init__()
        self.vq = build(net["vq"])
        self.grid = net["vq"]["img_size"] // DOWNSAMPLE
        p = net["prior"]
        self.prior = CodePrior(p["codebook_size"], self.grid * self.grid, net["num_classes"], p["width"], p["layers"])


def vq_bundle(config: GenerateConfig):
    bundle = load_bundle(config.vq_bundle, task="generate")
    if bundle.config.get("method") != "vqvae":
        raise BundleError(f"{config.vq_bundle}: is a '{bundle.config.get('method')}' generator, vq_bundle needs a vqvae")
    net = bundle.config["net"]
    if (net["img_size"], net["channels"]) != (config.img_size, config.channels):
        raise ConfigError(
            f"{config.vq_bundle}: the vqvae makes {net['img_size']} px, {net['channels']}-channel images; "
            f"set --img-size {net['img_size']} --channels {net['channels']}"
        )
    return bundle


def prior_net_config(config: GenerateConfig, num_classes: int) -> dict:
    vq_net = vq_bundle(config).config["net"]
    return {"img_size": config.img_size, "channels": config.channels, "num_classes": num_classes if config.conditional else 0,
            "vq": vq_net, "prior": {"codebook_size": vq_net["codebook_size"], "width": config.prior_width,
                                    "layers": config.prior_layers}}


def sample_prior(model: VQWithPrior, net: dict, n: int, labels, options: SampleOptions, generator) -> torch.Tensor:
    device = next(model.parameters()).device
    codes = model.prior.sample(n, labels.to(device) if labels is not None else None, options.temperature,
                               options.top_k, generator)
    return decode_indices(model.vq, codes, model.grid)


VQVAE = MethodSpec(name="vqvae", net_config=net_config, build=build,
                   no_sample_hint="a vqvae reconstructs; train its prior to sample: "
                                  "omnivis train generate --method vqvae-ar --vq-bundle THIS_BUNDLE")
VQVAE_AR = MethodSpec(name="vqvae-ar", net_config=prior_net_config, build=VQWithPrior,
                      sample=sample_prior)
