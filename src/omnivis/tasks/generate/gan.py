"""GAN training: hinge loss, spectral-norm projection discriminator, EMA of the generator.

One training step is one discriminator update then one generator update (manual optimization).
A non-finite loss stops the run naming the step (the engine's callback sees ``manual_backward``);
a collapse where the discriminator wins outright (hinge loss ~0 for ``COLLAPSE_STEPS`` batches) is
reported as a ``TrainingError`` instead of training on silently.
"""

from __future__ import annotations

import copy

import torch

from omnivis.errors import TrainingError
from omnivis.models.generative import ema_update
from omnivis.models.generative.gan import (
    Discriminator,
    Generator,
    hinge_d_loss,
    hinge_g_loss,
)
from omnivis.tasks.common import log_training
from omnivis.tasks.generate.base import GeneratorModule, MethodSpec, SampleOptions
from omnivis.tasks.generate.config import GenerateConfig

COLLAPSE_STEPS = 200


def net_config(config: GenerateConfig, num_classes: int) -> dict:
    return {"img_size": config.img_size, "channels": config.channels, "width": config.width,
            "z_dim": config.latent_dim, "num_classes": num_classes if config.conditional else 0}


def build(net: dict) -> Generator:
    return Generator(net["img_size"], net["channels"], net["width"], net["z_dim"], net["num_classes"])


class GANModule(GeneratorModule):
    partial_graph = True  # the discriminator's loss reaches only the discriminator

    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, build)
        self.automatic_optimization = False
        self.disc = Discriminator(net["img_size"], net["channels"], net["width"], net["num_classes"])
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay > 0 else None
        self.d_won_for = 0
        self.batches = 0

    def training_step(self, batch, batch_idx: int) -> None:
        images, labels = self.split_batch(batch)
        opt_g, opt_d = self.optimizers()
        n = len(images)
        z = torch.randn(n, self.net["z_dim"], device=images.device)
        with torch.no_grad():
            fake = self.model(z, labels)
        d_loss = hinge_d_loss(self.disc(images, labels), self.disc(fake, labels))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        z = torch.randn(n, self.net["z_dim"], device=images.device)
        g_loss = hinge_g_loss(self.disc(self.model(z, labels), labels))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.batches += 1
        if self.ema is not None:
            ema_update(self.ema, self.model, self.config.ema_decay, self.batches)
        log_training(self, {"train/d_loss": d_loss, "train/g_loss": g_loss}, prog_bar=("train/d_loss", "train/g_loss"))
        self.d_won_for = self.d_won_for + 1 if d_loss.item() < 1e-3 else 0
        if self.d_won_for >= COLLAPSE_STEPS:
            raise TrainingError(
                f"GAN collapsed at step {self.global_step} (batch {self.batches}): the discriminator's hinge loss "
                f"stayed ~0 for {COLLAPSE_STEPS} batches, so the generator gets no signal; lower --lr or widen the data"
            )

    def export_model(self):
        return self.ema if self.ema is not None else self.model

    def configure_optimizers(self):
        lr = self.config.learning_rate
        opt_g = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=2 * lr, betas=(0.0, 0.9))  # TTUR
        return [opt_g, opt_d]


def random_latent(model, net: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, net["z_dim"]), generator=generator)


def decode(model, net: dict, latents, labels, options: SampleOptions) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(latents.to(device), labels.to(device) if labels is not None else None).clamp(-1.0, 1.0)


def sample(model, net: dict, n: int, labels, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    return decode(model, net, random_latent(model, net, n, generator), labels, options)


SPEC = MethodSpec(name="gan", net_config=net_config, build=build, module=GANModule, sample=sample,
                  random_latent=random_latent, decode=decode)
