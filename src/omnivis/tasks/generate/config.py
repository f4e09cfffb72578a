"""The one config of a generator run: method, data, net size and recipe, plus the engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError

TASK = "generate"

METHODS = ("ae", "vae", "vqvae", "vqvae-ar", "gan", "diffusion")
DEFAULT_LR = {"ae": 2e-3, "vae": 2e-3, "vqvae": 2e-3, "vqvae-ar": 1e-3, "gan": 2e-4, "diffusion": 2e-3}


@dataclass(kw_only=True)
class GenerateConfig:
    """Everything that defines a generator training run.

    Attributes:
        method: ae | vae | vqvae | vqvae-ar | gan | diffusion.
        data: class folders, ``builtin:NAME`` or ``torchvision:NAME:ROOT`` (labels used only with
            ``conditional``); with ``text``, a caption dataset (see ``text``).
        strict: unreadable images are an error instead of being skipped with a warning.
        img_size: square size the model produces; a power of two times 4 (8, 16, 32, 64).
        channels: 1 (grayscale) or 3 (RGB).
        conditional: condition on the class label (classifier-free guidance for diffusion).
        text: condition on captions through a frozen text encoder (diffusion only, not with
            ``conditional``); data is read as captions: ``builtin:shapes``, ``builtin:digits``, a
            ``path,caption`` CSV, a COCO captions JSON or a class folder (``a photo of a CLASS``).
        text_encoder: text: the sentence-transformers model (hub name or folder; None:
            all-MiniLM-L6-v2), recorded in the bundle so sampling uses the same one.
        val_fraction: held-out images (stratified, ``trainer.seed``) that evaluation compares with.
        width: base channel width of the nets.
        latent_dim: ae/vae latent size; z size of the GAN generator.
        kl_weight: vae KL weight.
        codebook_size: vqvae codebook entries.
        embed_dim: vqvae code vector size (channels of the quantized latent).
        vq_bundle: vqvae-ar: the trained vqvae bundle whose codes the prior models.
        prior_layers: vqvae-ar: transformer layers of the prior.
        prior_width: vqvae-ar: transformer width of the prior.
        num_train_timesteps: diffusion: noise levels of the training schedule.
        beta_schedule: diffusion: the noise schedule (diffusers' ``DDPMScheduler`` names:
            ``squaredcos_cap_v2`` is the cosine schedule, also ``linear``, ``scaled_linear``).
        snr_gamma: diffusion: Min-SNR-gamma loss weighting (Hang et al. 2023; diffusers'
            ``--snr_gamma``): each noise level's loss is weighted ``min(SNR, gamma) / SNR``, so the
            nearly clean levels, whose noise is easy to guess, no longer take most of the gradient.
            None: the plain mean squared error.
        cfg_dropout: diffusion: how often the label (or caption) is replaced by the null class
            (null text) in training (for classifier-free guidance).
        ema_decay: EMA of the weights that are saved (diffusion, gan; 0: off).
        sampler: diffusion: the default sampler of generate/eval: ``ddim``, ``dpm`` or ``ddpm``.
        sample_steps: diffusion: the default sampling steps of generate/eval.
        guidance: diffusion: the default classifier-free guidance scale (conditional or text; 1: off;
            None: 1.25 with class labels, the best FID on digits, and 2 with text, where 1.25 drew
            the asked colour-shape pair less often: BENCHMARKS.md (g) and (s)).
        reference: a classifier bundle (``omnivis train classify``) evaluation uses for FID/KID
            features and class accuracy; evaluation runs at the end of training when it is set.
        hflip: random horizontal flips (off for digits and text).
        batch_size: images per step on each device.
        lr: learning rate (None: the method's default).
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    method: str = "diffusion"
    data: str = "builtin:digits"
    strict: bool = False
    img_size: int = 16
    channels: int = 1
    conditional: bool = False
    text: bool = False
    text_encoder: str | None = None
    val_fraction: float = 0.2
    width: int = 32
    latent_dim: int = 32
    kl_weight: float = 1.0
    codebook_size: int = 64
    embed_dim: int = 16
    vq_bundle: str | None = None
    prior_layers: int = 2
    prior_width: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    snr_gamma: float | None = None
    cfg_dropout: float = 0.1
    ema_decay: float = 0.999
    sampler: str = "ddim"
    sample_steps: int = 50
    guidance: float | None = None
    reference: str | None = None
    hflip: bool = False
    batch_size: int = 64
    lr: float | None = None
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=10))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        size = self.img_size
        while size > 4 and size % 2 == 0:
            size //= 2
        if self.img_size < 8 or self.img_size > 256 or size != 4:
            raise ConfigError(f"img_size must be 8, 16, 32, 64, 128 or 256 (4 times a power of two), got {self.img_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.width < 8 or self.width % 8:
            raise ConfigError(f"width must be a multiple of 8, got {self.width}")
        if self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise ConfigError("batch_size must be >= 1 and lr > 0")
        if self.method == "vqvae-ar" and not self.vq_bundle:
            raise ConfigError("method vqvae-ar needs vq_bundle (--vq-bundle): a trained vqvae bundle")
        if not 0.0 <= self.cfg_dropout < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("cfg_dropout and ema_decay must be in [0, 1)")
        if self.text and self.method != "diffusion":
            raise ConfigError(f"text conditioning (--text) works with method diffusion, not {self.method}")
        if self.text and self.conditional:
            raise ConfigError("--text and --conditional exclude each other: condition on captions or on class labels")
        if self.text_encoder is not None and not self.text:
            raise ConfigError("--text-encoder is for text-conditioned runs: add --text")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ConfigError(f"snr_gamma must be > 0 (or None: off), got {self.snr_gamma}")
        if self.sampler not in ("ddim", "dpm", "ddpm"):
            raise ConfigError(f"unknown sampler '{self.sampler}'; choose ddim, dpm or ddpm")
        if not 1 <= self.sample_steps <= self.num_train_timesteps:
            raise ConfigError(f"sample_steps must be in 1..{self.num_train_timesteps}, got {self.sample_steps}")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"

    @property
    def default_guidance(self) -> float:
        """The guidance a bundle samples with unless told otherwise (``guidance``)."""
        if not (self.conditional or self.text):
            return 1.0
        if self.guidance is not None:
            return self.guidance
        return 2.0 if self.text else 1.25

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]
