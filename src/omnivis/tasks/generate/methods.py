"""The method table: name -> MethodSpec (net sizing, builder, sampler); training: ``modules.TRAINING_MODULES``."""

from __future__ import annotations

from omnivis.tasks.generate import autoencoder, diffusion, gan, vq
from omnivis.tasks.generate.spec import MethodSpec

METHOD_SPECS: dict[str, MethodSpec] = {
    "ae": autoencoder.AE,
    "vae": autoencoder.VAE_SPEC,
    "vqvae": vq.VQVAE,
    "vqvae-ar": vq.VQVAE_AR,
    "gan": gan.SPEC,
    "diffusion": diffusion.SPEC,
}
