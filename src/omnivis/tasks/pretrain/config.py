"""The pretraining config: one typed, keyword-only dataclass for every self-supervised method."""

from __future__ import annotations

from dataclasses import dataclass, field

from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError

METHODS: tuple[str, ...] = ("simclr", "dino", "rotation", "mae")

# MAE masks patch tokens, so it needs a ViT; the other methods only use pooled features.
DEFAULT_MODELS: dict[str, str] = {
    "simclr": "omnivis_resnet_tiny",
    "dino": "omnivis_resnet_tiny",
    "rotation": "omnivis_resnet_tiny",
    "mae": "omnivis_vit_tiny",
}


@dataclass(kw_only=True)
class PretrainConfig:
    """Everything that defines a self-supervised pretraining run.

    Labels in the data, if any, are never used for training (only to colour the embedding plot).

    Attributes:
        data: an image folder (class sub-folders or none at all), ``builtin:NAME`` or
            ``torchvision:NAME:ROOT``.
        max_images: train on at most this many images, a random subset fixed by
            ``trainer.seed`` (None: all); for quick trials and tests.
        strict: unreadable images are an error instead of being skipped with a warning.
        method: ``simclr``, ``dino``, ``rotation`` or ``mae``.
        model: any timm name or omnivis preset; None picks the method's default
            (``omnivis_vit_tiny`` for mae, ``omnivis_resnet_tiny`` otherwise). mae needs a ViT.
        img_size: square input size (a multiple of the ViT patch size for mae); default: the
            images' median shorter side rounded up to a multiple of 8, within [32, 128].
        channels: 3 (RGB) or 1 (grayscale); default: 1 when every sampled image is grey.
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        hflip: random horizontal flips in the views (turn off where mirror images differ in meaning:
            without labels the run cannot check it).
        crop_scale: smallest crop area fraction of the simclr/dino global views (raise it for tiny
            images such as 8 x 8 digits, where a 20% crop keeps too little of the object).
        temperature: NT-Xent temperature (simclr).
        momentum: starting EMA momentum of the teacher (dino); it rises to 1 on a cosine schedule.
        local_crops: extra small crops per image for the student (dino multi-crop; 0: two global views only).
        mask_ratio: fraction of patches hidden from the encoder (mae).
        trainer: engine settings (epochs, devices, precision, checkpoints ...); 20 epochs.
    """

    data: str = "builtin:digits"
    max_images: int | None = None
    strict: bool = False
    method: str = "simclr"
    model: str | None = None
    img_size: int | None = None
    channels: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    hflip: bool = True
    crop_scale: float = 0.2
    temperature: float = 0.5
    momentum: float = 0.996
    local_crops: int = 0
    mask_ratio: float = 0.75
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=20))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown pretraining method '{self.method}'; choose one of {', '.join(METHODS)}")
        if self.model is None:
            self.model = DEFAULT_MODELS[self.method]
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size is not None and self.img_size < 8:
            raise ConfigError(f"img_size must be >= 8, got {self.img_size}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (the methods compare images in a batch), got {self.batch_size}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError("lr must be > 0, weight_decay and warmup_epochs >= 0")
        if self.max_images is not None and self.max_images < 2:
            raise ConfigError(f"max_images must be >= 2 or None, got {self.max_images}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.local_crops < 0:
            raise ConfigError(f"local_crops must be >= 0, got {self.local_crops}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @property
    def mode(self) -> str:
        """The PIL mode images are loaded in."""
        return "RGB" if self.channels == 3 else "L"
