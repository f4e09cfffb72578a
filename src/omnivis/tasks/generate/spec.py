"""A generator method's sampling side: the method table row and the sampling options.

Sampling and interpolating from a bundle import this, the nets and diffusers' schedulers only;
the LightningModules that train each method are in ``modules.py`` (diffusers' split: models
predict, schedulers step, training is elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleOptions:
    """How to draw samples: diffusion ``sampler``/``steps``/``guidance``, prior ``temperature``/``top_k``."""

    steps: int = 50
    guidance: float = 1.0
    sampler: str = "ddim"
    temperature: float = 1.0
    top_k: int | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One generator method: how to size, build and sample it (training lives in ``modules.py``).

    Attributes:
        net_config: (config, num_classes) -> the JSON dict stored in the bundle to rebuild the net.
        build: net dict -> the nn.Module whose weights the bundle holds.
        sample: (model, net, n, labels|None, options, generator) -> (n, C, H, W) in [-1, 1], or None
            when the method has no prior to sample from (ae, vqvae). ``labels`` is the condition:
            (n,) class indices, or (n, D) text embeddings for a text-conditioned diffusion.
        encode: (model, images in [-1, 1]) -> (B, D) latents, for interpolation between images.
        random_latent: (model, net, n, generator) -> (n, ...) latents drawn from the prior.
        decode: (model, net, latents, labels|None, options) -> images in [-1, 1].
        no_sample_hint: what to do instead when ``sample`` is None.
    """

    name: str
    net_config: Callable
    build: Callable
    sample: Callable | None = None
    encode: Callable | None = None
    random_latent: Callable | None = None
    decode: Callable | None = None
    no_sample_hint: str = ""
