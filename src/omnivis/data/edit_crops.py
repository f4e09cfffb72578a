"""Training samples for image editing: random crops of photos, degraded on the fly.

One photo gives many crops (``crops_per_image`` per epoch), each from its own generator seeded by
(seed, epoch, sample index), so a resumed run sees the same crops and degradations as an
uninterrupted one. Photos are decoded once into memory when they fit (``data/cache.py`` fills
``decoded``, as for every task).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from omnivis.data.decode import decode_tensor
from omnivis.data.degrade import CONDITION_SIZE, Degradation, degrade
from omnivis.data.readers import ClassificationData
from omnivis.seeding import mix_seed


def _random_crop(image: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A ``size`` x ``size`` crop of a (C, H, W) image (any dtype, kept); smaller images are first
    enlarged to fit."""
    h, w = image.shape[-2:]
    if min(h, w) < size:
        factor = size / min(h, w)
        enlarged = F.interpolate(image[None].float(), size=(max(size, round(h * factor)), max(size, round(w * factor))),
                                 mode="bilinear", align_corners=False, antialias=False)[0]
        image = enlarged.round().clamp(0, 255).to(image.dtype) if image.dtype == torch.uint8 else enlarged
        h, w = image.shape[-2:]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[:, top : top + size, left : left + size]


def _random_orientation(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One of the 8 flips and quarter turns: free data for restoration, which has no 'up'."""
    if rng.random() < 0.5:
        image = image.flip(-1)
    return torch.rot90(image, int(rng.integers(0, 4)), dims=(-2, -1))


def _shrink(image: torch.Tensor, short: float, size: int) -> torch.Tensor:
    """``image`` scaled so its shorter side is ``short`` (never below ``size``); unchanged if smaller."""
    h, w = image.shape[-2:]
    if min(h, w) <= short:
        return image
    factor = short / min(h, w)
    return F.interpolate(image[None], size=(max(size, round(h * factor)), max(size, round(w * factor))),
                         mode="bilinear", antialias=True, align_corners=False)[0]


class EditCropDataset(Dataset):
    """Photos as (degraded input, clean target, mask, condition) crops.

    Items are addressed by ``(epoch, index)``; sample ``index`` crops photo ``index % photos``.
    For ``style`` the second item is instead a crop of a style image (``styles``, default the photos
    themselves: another photo than the content's, drawn from the same generator).
    Shapes: input (3, S / scale, S / scale), target (3, S, S), mask (1, S, S) (zeros unless
    inpainting), condition (CONDITION_SIZE,) (zeros unless enhancing); S = ``crop_size``.
    """

    def __init__(self, photos: ClassificationData, degradation: Degradation, crop_size: int,
                 crops_per_image: int, seed: int = 0, styles: ClassificationData | None = None) -> None:
        if crop_size % max(1, degradation.scale) or crop_size % 4:
            raise ValueError(f"crop_size {crop_size} must be a multiple of 4 and of the scale {degradation.scale}")
        self.data = photos
        self.degradation = degradation
        self.crop_size = crop_size
        self.crops_per_image = crops_per_image
        self.seed = seed
        self.styles = styles
        self.mode = "RGB"
        self.decoded: list[torch.Tensor | None] | None = None
        self._small: dict[int, torch.Tensor] = {}  # enhance: photos shrunk once to a short side of 2 crops

    def __len__(self) -> int:
        return len(self.data.samples) * self.crops_per_image

    def sources(self) -> list:
        return [sample.source for sample in self.data.samples]

    def load(self, photo: int) -> torch.Tensor:
        if self.decoded is not None and self.decoded[photo] is not None:
            return self.decoded[photo]
        return decode_tensor(self.data.samples[photo].source, self.mode)

    def _content_and_style(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        size, photos = self.crop_size, len(self.data.samples)
        content = _random_crop(self.load(index % photos), size, rng)
        if self.styles is None:  # another of the photos (the same one only when there is one photo)
            other = (index % photos + 1 + int(rng.integers(0, max(1, photos - 1)))) % photos
            style = self.load(other)
        else:
            style = decode_tensor(self.styles.samples[int(rng.integers(0, len(self.styles.samples)))].source, "RGB")
        style = _random_orientation(_random_crop(style, size, rng), rng)
        return (content.float().div(255.0), style.float().div(255.0), torch.zeros(1, size, size),
                torch.zeros(CONDITION_SIZE))

    def _shrunk(self, photo: int) -> torch.Tensor:
        if photo not in self._small:  # shrunk as uint8: an 8-Mpx photo in float would be 100 MB
            image = self.load(photo)
            if min(image.shape[-2:]) > 2 * self.crop_size:
                from torchvision.transforms.v2 import functional as TF

                image = TF.resize(image, 2 * self.crop_size, antialias=True)
            self._small[photo] = image.float() / 255.0
        return self._small[photo]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng(mix_seed(self.seed, epoch, index))
        size = self.crop_size
        if self.degradation.op == "enhance":
            # a crop's whole-image statistics should be those of its photo, as at inference: so the photo
            # is shrunk to a short side of 1-2 crops and darkened whole, and the crop taken from that
            small = self._shrunk(index % len(self.data.samples))
            small = _shrink(small, rng.uniform(size, 2 * size), size)
            dark = degrade(small, self.degradation, rng)
            both = _random_orientation(_random_crop(torch.cat([small, dark.image]), size, rng), rng)
            return both[3:].contiguous(), both[:3].contiguous(), torch.zeros(1, size, size), dark.condition
        if self.degradation.op == "style":
            return self._content_and_style(index, rng)
        photo = self.load(index % len(self.data.samples))  # uint8: crop first, a whole photo in float is 100 MB
        clean = _random_orientation(_random_crop(photo, size, rng), rng).float().div(255.0)
        degraded = degrade(clean, self.degradation, rng)
        mask = degraded.mask if degraded.mask is not None else torch.zeros(1, size, size)
        return degraded.image, clean, mask, torch.zeros(CONDITION_SIZE)
