"""The LightningModules that train each generator method, and the table train.py reads.

Kept apart from the methods' nets and samplers (``autoencoder.py``, ``vq.py``, ``gan.py``,
``diffusion.py``) so that sampling from a bundle never imports Lightning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from omnivis.errors import TrainingError
from omnivis.models.generative import ema_update
from omnivis.models.generative.gan import Discriminator, hinge_d_loss, hinge_g_loss
from omnivis.models.generative.unet import build_train_scheduler
from omnivis.models.generative.vq import encode_indices, vq_loss
from omnivis.tasks.common import adamw_with_warmup_cosine, log_training
from omnivis.tasks.generate import autoencoder, diffusion, gan, vq
from omnivis.tasks.generate.config import GenerateConfig

GAN_COLLAPSE_STEPS = 200
"""Batches in a row with the discriminator's hinge loss ~0 after which a GAN run is called collapsed."""


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


class AEModule(GeneratorModule):
    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, autoencoder.build_ae)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = self.split_batch(batch)
        loss = F.mse_loss(self.model(images, labels), images)
        log_training(self, {"train/loss": loss})
        return loss


class VAEModule(GeneratorModule):
    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, autoencoder.build_vae)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = self.split_batch(batch)
        parts = self.model.loss(images, labels, self.config.kl_weight)
        log_training(self, {"train/loss": parts["loss"], "train/recon": parts["recon"], "train/kl": parts["kl"]})
        return parts["loss"]


class VQModule(GeneratorModule):
    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, vq.build)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _ = batch
        parts = vq_loss(self.model, images)
        log_training(self, {"train/loss": parts["loss"], "train/recon": parts["recon"]})
        return parts["loss"]


class PriorModule(GeneratorModule):
    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, vq.VQWithPrior)
        self.model.vq.load_state_dict(vq.vq_bundle(config).state_dict)
        self.model.vq.requires_grad_(False)

    def trainable(self) -> nn.Module:
        return self.model.prior

    def on_train_epoch_start(self) -> None:
        self.model.vq.eval()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = self.split_batch(batch)
        codes = encode_indices(self.model.vq, images)
        loss = self.model.prior.loss(codes, labels)
        log_training(self, {"train/loss": loss})
        return loss


class GANModule(GeneratorModule):
    """Hinge loss, spectral-norm projection discriminator, EMA of the generator.

    One training step is one discriminator update then one generator update (manual optimization).
    A non-finite loss stops the run naming the step (the engine's callback sees ``manual_backward``);
    a collapse where the discriminator wins outright (hinge loss ~0 for ``GAN_COLLAPSE_STEPS``
    batches) is reported as a ``TrainingError`` instead of training on silently.
    """

    partial_graph = True  # the discriminator's loss reaches only the discriminator

    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, gan.build)
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
        if self.d_won_for >= GAN_COLLAPSE_STEPS:
            raise TrainingError(
                f"GAN collapsed at step {self.global_step} (batch {self.batches}): the discriminator's hinge loss "
                f"stayed ~0 for {GAN_COLLAPSE_STEPS} batches, so the generator gets no signal; lower --lr or widen the data"
            )

    def export_model(self):
        return self.ema if self.ema is not None else self.model

    def configure_optimizers(self):
        lr = self.config.learning_rate
        opt_g = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=2 * lr, betas=(0.0, 0.9))  # TTUR
        return [opt_g, opt_d]


class DiffusionModule(GeneratorModule):
    """DDPM epsilon prediction; with classes, label dropout teaches the null class for guidance."""

    def __init__(self, config: GenerateConfig, net: dict) -> None:
        super().__init__(config, net, diffusion.build)
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
        loss = self.noise_loss(self.model(noisy, t, class_labels=labels).sample, noise, t)
        log_training(self, {"train/loss": loss})
        return loss

    def noise_loss(self, predicted: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted noise; with ``snr_gamma`` each image's is weighted ``min(SNR_t, gamma) / SNR_t``."""
        if self.config.snr_gamma is None:
            return F.mse_loss(predicted, noise)
        per_image = F.mse_loss(predicted.float(), noise.float(), reduction="none").mean(dim=tuple(range(1, noise.ndim)))
        abar = self.scheduler.alphas_cumprod.to(t.device)[t]
        snr = abar / (1.0 - abar)
        weight = (self.config.snr_gamma / snr).clamp(max=1.0)  # = min(SNR, gamma) / SNR; SNR 0 gives 1
        return (per_image * weight).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            ema_update(self.ema, self.model, self.config.ema_decay, self.global_step)

    def export_model(self):
        return self.ema if self.ema is not None else self.model


class TextDiffusionModule(DiffusionModule):
    """DDPM epsilon prediction conditioned on captions through frozen text embeddings.

    Batches are (images, sample index). Each step draws one of the image's captions and replaces it
    by the learned null text with probability ``cfg_dropout``, both from torch's RNG (which the
    engine reseeds every step). The embeddings are precomputed: ``table`` (K, D) holds each distinct
    caption once, ``caption_ids`` (N, M) the captions of training image i (padded), ``caption_counts``
    (N,) how many it has. They are non-persistent buffers: the bundle holds only the net.
    """

    def __init__(self, config: GenerateConfig, net: dict, table: torch.Tensor, caption_ids: torch.Tensor,
                 caption_counts: torch.Tensor) -> None:
        super().__init__(config, net)
        if table.ndim != 2 or table.shape[1] != net["text_dim"]:
            raise ValueError(f"table must be (K, {net['text_dim']}), got {tuple(table.shape)}")
        self.register_buffer("text_table", table.float(), persistent=False)
        self.register_buffer("caption_ids", caption_ids.long(), persistent=False)
        self.register_buffer("caption_counts", caption_counts.long(), persistent=False)

    def batch_text(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) training-sample indices -> (B, D): a random caption of each, or the null text."""
        index = index.long().to(self.caption_ids.device)
        counts = self.caption_counts[index]
        pick = (torch.rand(len(index), device=index.device) * counts).long().clamp_max(counts - 1)
        text = self.text_table[self.caption_ids[index, pick]]
        drop = torch.rand(len(index), device=index.device) < self.config.cfg_dropout
        return torch.where(drop[:, None], self.model.null_text(len(index)), text)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, index = batch
        noise = torch.randn_like(images)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(images),), device=images.device)
        noisy = self.scheduler.add_noise(images, noise, t)
        loss = self.noise_loss(self.model(noisy, t, self.batch_text(index)), noise, t)
        log_training(self, {"train/loss": loss})
        return loss


TRAINING_MODULES: dict[str, Callable[[GenerateConfig, dict], GeneratorModule]] = {
    "ae": AEModule,
    "vae": VAEModule,
    "vqvae": VQModule,
    "vqvae-ar": PriorModule,
    "gan": GANModule,
    "diffusion": DiffusionModule,
}
"""Method name -> the LightningModule that trains it (``export_model()`` gives the weights to save)."""
