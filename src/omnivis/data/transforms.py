"""torchvision.transforms.v2 presets for training and evaluation, chosen from the config.

Train and eval pipelines take a (C, H, W) uint8 tensor (``decode_tensor``; a PIL image also works)
and give a normalized float tensor (C, H, W): the augmentation works on uint8 pixels, and only the
model's input is float. Each is a ``StagedTransform``: the per-image uint8 part, then an elementwise
finish that a dataset may run once on a whole stacked batch. Batch-level mixing (Mixup/CutMix) needs
the labels of the whole batch, so it is built separately and applied in the training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

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


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])


@dataclass(frozen=True)
class StagedTransform:
    """``finish(geometry(image))``. ``geometry`` is everything per image (decoding's uint8 in and out:
    crops, flips, every random draw); ``finish`` is elementwise and fixed (to float, normalize), so on
    a stacked batch it gives the same numbers as image by image, in one call instead of one per image
    (``ImageClassificationDataset.__getitems__``): on small images that per-call cost was a fifth
    of what the loader spent."""

    geometry: Callable
    finish: Callable

    def __call__(self, image) -> torch.Tensor:
        return self.finish(self.geometry(image))


def _resize_weights(start: torch.Tensor, length: torch.Tensor, full: int, out: int) -> torch.Tensor:
    """(B, out, full) weights that resize the span ``[start, start + length)`` of an axis of ``full``
    pixels to ``out`` pixels: PyTorch's antialiased bilinear filter (a triangle as wide as the
    scale when shrinking, plain bilinear when enlarging, taps outside the span dropped and the rest
    renormalized), written as a matrix so that a whole batch of different crops is two matmuls."""
    scale = length.double() / out  # (B,)
    support = scale.clamp(min=1.0)
    centre = (torch.arange(out, dtype=torch.float64) + 0.5)[None] * scale[:, None]  # (B, out), span coordinates
    pixel = torch.arange(full, dtype=torch.float64)[None, None] - start.double()[:, None, None] + 0.5  # (B, 1, full)
    weights = (1 - (pixel - centre[..., None]).abs() / support[:, None, None]).clamp(min=0)
    weights = weights * ((pixel > 0) & (pixel < length.double()[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


class RandomResizedCropFlip:
    """``v2.RandomResizedCrop``'s crop distribution (area fraction uniform in ``scale``, aspect ratio
    log-uniform in ``ratio``, 10 tries, then the centre crop at the nearest allowed ratio), resized
    with its antialiased bilinear filter, then (``hflip``) mirrored with probability 0.5.

    Per image only the draws happen (one ``torch.rand`` call, from torch's global RNG as the v2
    transforms' draws). Small images (``batchable``: at most ``BATCH_MAX_PIXELS``) are resized by
    ``apply``, which does a whole batch of same-sized images with their different crops as two
    batched matmuls (a 64-image batch of 28-px digits: ~0.5 ms instead of ~10 ms through v2 one
    image at a time, and on 2 cores the loader runs in series with the model), rounded back to uint8
    (within one level of v2's uint8 kernel); one image alone takes the same path, so a batch gives
    the same numbers as its images one at a time. Larger images are cropped first and resized by
    v2's kernel, one at a time: there the matmuls over the whole image would cost more than they save.
    """

    BATCH_MAX_PIXELS = 96 * 96

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = False) -> None:
        self.size, self.scale, self.ratio, self.hflip = size, scale, ratio, hflip
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def draw(self, height: int, width: int) -> tuple[int, int, int, int, bool]:
        """(top, left, height, width) of the crop and whether to mirror it."""
        (s0, s1), (r0, r1) = self.scale, self.log_ratio
        draws = torch.rand(11, 4).tolist()
        mirror = self.hflip and draws[10][0] < 0.5
        for u_area, u_ratio, u_top, u_left in draws[:10]:
            target_area = height * width * (s0 + (s1 - s0) * u_area)
            aspect = math.exp(r0 + (r1 - r0) * u_ratio)
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top, left = min(int(u_top * (height - h + 1)), height - h), min(int(u_left * (width - w + 1)), width - w)
                return top, left, h, w, mirror
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w, mirror

    def apply(self, images: torch.Tensor, draws: list[tuple[int, int, int, int, bool]]) -> torch.Tensor:
        """(B, C, H, W) images, one draw each -> (B, C, size, size), of the images' dtype."""
        crops = torch.tensor([d[:4] for d in draws], dtype=torch.int64)
        rows = _resize_weights(crops[:, 0], crops[:, 2], images.shape[-2], self.size)
        cols = _resize_weights(crops[:, 1], crops[:, 3], images.shape[-1], self.size)
        mirrored = torch.tensor([d[4] for d in draws])
        if mirrored.any():
            cols[mirrored] = cols[mirrored].flip(1)
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        out = rows.to(dtype)[:, None] @ images.to(dtype) @ cols.to(dtype)[:, None].transpose(-1, -2)
        if images.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(images.dtype)

    def batchable(self, height: int, width: int) -> bool:
        """Whether images of this size are resized by ``apply`` (batched matmuls)."""
        return height * width <= self.BATCH_MAX_PIXELS

    def __call__(self, image) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            image = TF.to_image(image)
        draw = self.draw(*image.shape[-2:])
        if self.batchable(*image.shape[-2:]):
            return self.apply(image[None], [draw])[0]
        top, left, h, w, mirror = draw
        out = TF.resize_image(image[..., top : top + h, left : left + w], [self.size, self.size], antialias=True)
        return out.flip(-1) if mirror else out


class FastHorizontalFlip:
    """A mirror with probability 0.5 (one draw from torch's global RNG), without v2's dispatch."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if float(torch.rand(())) < 0.5 else image


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


def build_eval_transform(img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> StagedTransform:
    """Resize the short side to ``img_size`` and center-crop: the one eval/predict/serve pipeline."""
    return StagedTransform(build_eval_geometry(img_size), _finish(mean, std))


def build_train_transform(
    img_size: int, mean: tuple[float, ...], std: tuple[float, ...], augment: AugmentConfig
) -> StagedTransform:
    """The training pipeline for ``augment``; all randomness comes from torch's global RNG,
    which the dataset seeds per (seed, epoch, sample) so that every draw is reproducible."""
    if augment.preset == "none":
        steps: list[Callable] = [
            v2.ToImage(),
            v2.Resize(img_size, antialias=True),
            v2.CenterCrop(img_size),
        ]
    else:
        steps = [RandomResizedCropFlip(img_size, scale=(augment.scale_min, 1.0), hflip=bool(augment.hflip))]
    if augment.hflip and augment.preset == "none":
        steps.append(FastHorizontalFlip())
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
    return StagedTransform(steps[0] if len(steps) == 1 else v2.Compose(steps), _finish(mean, std))


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
        steps.append(FastHorizontalFlip())
    return StagedTransform(v2.Compose(steps), _finish((0.5,), (0.5,)))
