"""torchvision.transforms.v2 presets for training and evaluation, chosen from the config.

Train and eval pipelines take a (C, H, W) uint8 tensor (``decode_tensor``; a PIL image also works)
and give a normalized float tensor (C, H, W): the augmentation works on uint8 pixels, and only the
model's input is float. Batch-level mixing (Mixup/CutMix) needs the labels of the whole
batch, so it is built separately and applied in the training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2

from omnivis.errors import ConfigError

AUGMENT_PRESETS = ("none", "light", "randaugment", "trivialaugment")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(kw_only=True)
class AugmentConfig:
    """How training images are augmented.

    Attributes:
        preset: ``none`` (resize only), ``light`` (random resized crop), ``randaugment`` or
            ``trivialaugment`` (light plus the named policy).
        hflip: random horizontal flips (None: decided from the data by a short held-out check,
            ``data/profile.py``; off for digits, arrows and text, where a mirror changes the class).
        rotation: maximum random rotation in degrees (0 disables).
        color_jitter: brightness/contrast (and, for RGB, saturation) jitter strength (0 disables).
        scale_min: smallest crop area fraction for the random resized crop.
        grayscale: probability of turning a training image grey (colour images only): shape
            features that do not lean on colour. Image-text alignment takes 0.5: a model that never
            saw a red circle then still finds one far more often (benchmarks/multimodal.py).
        mixup: Mixup alpha (0 disables).
        cutmix: CutMix alpha (0 disables).
    """

    preset: str = "light"
    hflip: bool | None = None
    rotation: float = 0.0
    color_jitter: float = 0.0
    scale_min: float = 0.8
    grayscale: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        if self.preset not in AUGMENT_PRESETS:
            raise ConfigError(f"unknown augment preset '{self.preset}'; choose one of {', '.join(AUGMENT_PRESETS)}")
        if not 0.0 < self.scale_min <= 1.0:
            raise ConfigError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if not 0.0 <= self.grayscale <= 1.0:
            raise ConfigError(f"grayscale must be a probability in [0, 1], got {self.grayscale}")
        if self.mixup < 0 or self.cutmix < 0 or self.rotation < 0 or self.color_jitter < 0:
            raise ConfigError("mixup, cutmix, rotation and color_jitter must be >= 0")


def default_mean_std(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for RGB (what timm weights expect); 0.5/0.5 for grayscale."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def build_eval_geometry(img_size: int) -> Callable:
    """Resize the short side to ``img_size`` and center-crop, on uint8: what a deployed graph's client
    does before the graph (which normalizes inside, ``omnivis.deploy.graphs``)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(img_size, interpolation=InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(img_size),
        ]
    )


def build_eval_transform(img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """Resize the short side to ``img_size`` and center-crop: the one eval/predict/serve pipeline."""
    return v2.Compose([build_eval_geometry(img_size), *_finish(mean, std)])


def build_train_transform(
    img_size: int, mean: tuple[float, ...], std: tuple[float, ...], augment: AugmentConfig
) -> Callable:
    """The training pipeline for ``augment``; all randomness comes from torch's global RNG,
    which the dataset seeds per (seed, epoch, sample) so that every draw is reproducible."""
    if augment.preset == "none":
        steps: list[v2.Transform] = [
            v2.ToImage(),
            v2.Resize(img_size, antialias=True),
            v2.CenterCrop(img_size),
        ]
    else:
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(img_size, scale=(augment.scale_min, 1.0), antialias=True),
        ]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation, interpolation=InterpolationMode.BILINEAR))
    if augment.color_jitter:
        j = augment.color_jitter
        steps.append(_GrayAwareColorJitter(j))
    if augment.grayscale:
        steps.append(v2.RandomGrayscale(augment.grayscale))
    if augment.preset == "randaugment":
        steps.append(v2.RandAugment())
    elif augment.preset == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose([*steps, *_finish(mean, std)])


class _GrayAwareColorJitter(v2.Transform):
    """Color jitter that only touches brightness/contrast on 1-channel images (no hue there)."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.rgb = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)
        self.gray = v2.ColorJitter(brightness=strength, contrast=strength)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.rgb(image) if image.shape[-3] == 3 else self.gray(image)


def build_batch_mix(augment: AugmentConfig, num_classes: int) -> Callable | None:
    """Mixup and/or CutMix over a batch ``(images, labels) -> (images, soft labels)``; None when off."""
    choices: list[v2.Transform] = []
    if augment.mixup:
        choices.append(v2.MixUp(alpha=augment.mixup, num_classes=num_classes))
    if augment.cutmix:
        choices.append(v2.CutMix(alpha=augment.cutmix, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


def generator_transform(img_size: int, hflip: bool = False) -> Callable:
    """PIL image -> (C, img_size, img_size) float in [-1, 1] (resize short side, center crop): what
    generators train on, and what their evaluation and interpolation feed them."""
    steps = [v2.ToImage(), v2.Resize(img_size, interpolation=InterpolationMode.BILINEAR, antialias=True),
             v2.CenterCrop(img_size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])])
