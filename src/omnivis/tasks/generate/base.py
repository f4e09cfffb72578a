"""What every generator method shares: the method table row, sampling options, the base module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lightning.pytorch as pl
import torch
from torch import nn

from omnivis.tasks.common import adamw_with_warmup_cosine
from omnivis.tasks.generate.config import GenerateConfig


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
    """One generator method: how to size, build, train and sample it.

    Attributes:
        net_config: (config, num_classes) -> the JSON dict stored in the bundle to rebuild the net.
        build: net dict -> the nn.Module whose weights the bundle holds.
        module: (config, net dict) -> the LightningModule that trains it (``export_model()`` gives
            the weights to save).
        sample: (model, net, n, labels|None, options, generator) -> (n, C, H, W) in [-1, 1], or None
            when the method has no prior to sample from (ae, vqvae).
        encode: (model, images in [-1, 1]) -> (B, D) latents, for interpolation between images.
        random_latent: (model, net, n, generator) -> (n, ...) latents drawn from the prior.
        decode: (model, net, latents, labels|None, options) -> images in [-1, 1].
        no_sample_hint: what to do instead when ``sample`` is None.
    """

    name: str
    net_config: Callable
    build: Callable
    module: Callable
    sample: Callable | None = None
    encode: Callable | None = None
    random_latent: Callable | None = None
    decode: Callable | None = None
    no_sample_hint: str = ""


class GeneratorModule(pl.LightningModule):
    """Holds ``self.model`` (built from the net dict); AdamW without decay, warmup + cosine."""

    # True when a backward pass may leave some trained parameters without a gradient (DDP must then
    # look for unused parameters): see ``build_trainer(partial_graph=)``
    partial_graph = False

    def __init__(self, config: GenerateConfig, net: dict, build: Callable[[dict], nn.Module]) -> None:
        super().__init__()
        self.config = config
        self.net = net
        self.model = build(net)

    def split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = batch
        return images, (labels.long() if self.config.conditional else None)

    def export_model(self) -> nn.Module:
        return self.model

    def trainable(self) -> nn.Module:
        return self.model

    def configure_optimizers(self) -> dict:
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_warmup_cosine(self.trainable(), self.config.learning_rate, 0.0, total, max(1, total // 50))
