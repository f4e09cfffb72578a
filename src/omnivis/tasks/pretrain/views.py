"""Multi-view augmentations for self-supervised methods, built with torchvision.transforms.v2.

lightly's own view transforms are torchvision-v1 style and draw from Python's ``random``; these
draw only from torch's global RNG, which ``ImageClassificationDataset`` seeds per
(seed, epoch, sample index), so every view of every sample is reproducible on resume and across
DDP ranks. Each builder takes a PIL image (RGB or L) and returns normalized float tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from omnivis.tasks.pretrain.config import PretrainConfig


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def _blur_kernel(size: int) -> int:
    """An odd kernel about a tenth of the view (SimCLR's recipe), at least 3 px."""
    kernel = max(3, size // 10)
    return kernel if kernel % 2 else kernel + 1


def contrastive_view(
    size: int, channels: int, mean: tuple[float, ...], std: tuple[float, ...], *,
    scale: tuple[float, float], hflip: bool, blur: float,
) -> v2.Compose:
    """SimCLR/DINO-style view: random resized crop, flip, colour jitter, grayscale, blur.

    On 1-channel images only brightness and contrast are jittered (there is no hue or saturation)
    and random grayscale is left out.
    """
    steps: list[v2.Transform] = [v2.ToImage(), v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if channels == 3:
        steps.append(v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8))
        steps.append(v2.RandomGrayscale(p=0.2))
    else:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8))
    if blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=blur))
    return v2.Compose([*steps, *_finish(mean, std)])


class MultiView:
    """Applies several view transforms to one image: ``image -> (view_0, view_1, ...)``."""

    def __init__(self, transforms: list[Callable]) -> None:
        self.transforms = transforms

    def __call__(self, image) -> tuple[torch.Tensor, ...]:
        return tuple(t(image) for t in self.transforms)


class RotatedView:
    """A lightly cropped view turned by a random multiple of 90 degrees: ``image -> (view, k)``.

    ``k`` in {0, 1, 2, 3} (counter-clockwise quarter turns) is the rotation task's label; it is
    drawn from torch's RNG like every other augmentation, so it is fixed per (seed, epoch, sample).
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.base = v2.Compose(
            [v2.ToImage(), v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), *_finish(mean, std)]
        )

    def __call__(self, image) -> tuple[torch.Tensor, int]:
        view = self.base(image)
        k = int(torch.randint(4, ()).item())
        return torch.rot90(view, k, dims=(-2, -1)), k


def simclr_views(config: PretrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """``image -> (view_a, view_b)``, each (C, S, S)."""
    view = contrastive_view(config.img_size, config.channels, mean, std, scale=(config.crop_scale, 1.0),
                            hflip=config.hflip, blur=0.5)
    return MultiView([view, view])


def dino_views(config: PretrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """``image -> (global_a, global_b, local_1, ... local_n)``; globals (C, S, S), locals (C, S/2, S/2)."""
    size, channels, hflip = config.img_size, config.channels, config.hflip
    global_a = contrastive_view(size, channels, mean, std, scale=(max(0.4, config.crop_scale), 1.0), hflip=hflip, blur=1.0)
    global_b = contrastive_view(size, channels, mean, std, scale=(max(0.4, config.crop_scale), 1.0), hflip=hflip, blur=0.1)
    local = contrastive_view(max(8, size // 2), channels, mean, std, scale=(0.05, 0.4), hflip=hflip, blur=0.5)
    return MultiView([global_a, global_b] + [local] * config.local_crops)


def rotation_views(config: PretrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """``image -> ((C, S, S) rotated view, k)``."""
    return RotatedView(config.img_size, mean, std)


def mae_views(config: PretrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """``image -> (C, S, S)``: one mildly cropped view (masking is the augmentation)."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.RandomResizedCrop(config.img_size, scale=(0.4, 1.0), antialias=True)]
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, *_finish(mean, std)])


def build_views(config: PretrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """The training transform of ``config.method`` (its row in ``methods.METHOD_SPECS``)."""
    from omnivis.tasks.pretrain.methods import METHOD_SPECS

    return METHOD_SPECS[config.method].views(config, mean, std)
