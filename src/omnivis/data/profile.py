"""What can be read off a folder of images before training: the defaults a run takes from its data.

``profile_images`` decodes a seeded sample of the training images (at most ``PROFILE_SAMPLE``) and
reads: whether every one is grey (one channel, or R = G = B everywhere), the median shorter side,
and the per-channel mean and standard deviation. ``flip_keeps_labels`` decides whether horizontal
flips are safe augmentation with a short held-out check: a logistic regression on 16 x 16 pixels
is fitted on part of the training sample and scored on the rest, as it is and mirrored. If mirroring
costs more accuracy than the check's own noise, flips change what the images mean (digits, arrows,
text) and stay off; otherwise (mirrored images read the same, or pixels say too little to tell, as
with most photos) they are on. The rule and its numbers are printed and kept in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from omnivis.data.decode import decode_tensor, rgb_to_grey

PROFILE_SAMPLE = 512
FLIP_SAMPLE = 2000
FLIP_SIDE = 16
MIN_SIZE, MAX_SIZE, SIZE_STEP = 32, 128, 8


@dataclass(frozen=True)
class DataProfile:
    """Read off a sample of the training images (see the module docstring).

    Attributes:
        sampled: how many images were decoded.
        grey: every sampled image is grey.
        native_size: median shorter side in pixels.
        rgb_mean, rgb_std: per channel, in [0, 1], of the images as RGB.
        grey_mean, grey_std: the same of the images converted to grey (PIL's ``L``).
    """

    sampled: int
    grey: bool
    native_size: int
    rgb_mean: tuple[float, ...]
    rgb_std: tuple[float, ...]
    grey_mean: tuple[float, ...]
    grey_std: tuple[float, ...]

    @property
    def channels(self) -> int:
        """1 when every sampled image is grey; else 3 (grey images among colour ones are repeated
        into three equal channels, as PIL's ``convert("RGB")`` does)."""
        return 1 if self.grey else 3

    def stats(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for images read with ``channels`` channels."""
        return (self.grey_mean, self.grey_std) if channels == 1 else (self.rgb_mean, self.rgb_std)

    def as_dict(self) -> dict:
        return asdict(self)

    def channels_line(self, what: str = "training images") -> str:
        """What a run prints when it takes :attr:`channels` from the data."""
        why = (f"all {self.sampled} sampled {what} are grey" if self.grey
               else f"the {what} are in colour (grey ones among them are read as RGB)")
        return f"channels {self.channels}: {why} (--channels to choose)"

    def stats_line(self, channels: int, what: str = "training images") -> str:
        """What a run prints when it normalizes with :meth:`stats`."""
        mean, std = self.stats(channels)
        return f"mean {list(mean)}, std {list(std)}: from {self.sampled} sampled {what}"


def _is_grey(image: torch.Tensor) -> bool:
    return image.shape[0] == 1 or bool((image[0] == image[1]).all() and (image[1] == image[2]).all())


def sample_indices(count: int, limit: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of at most ``limit`` of ``count`` indices (all of them when fewer)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def profile_images(sources: Sequence, seed: int = 0, sample: int = PROFILE_SAMPLE) -> DataProfile:
    """Decode a seeded sample of ``sources`` (files or arrays) and read channels, size and statistics."""
    if not len(sources):
        raise ValueError("no images to profile")
    images = [decode_tensor(sources[int(i)], "RGB") for i in sample_indices(len(sources), sample, seed)]
    grey = all(_is_grey(im) for im in images)
    sides = [min(im.shape[1:]) for im in images]
    rgb = torch.cat([im.reshape(3, -1) for im in images], dim=1).double() / 255.0
    grey_pixels = torch.cat([rgb_to_grey(im).reshape(1, -1) for im in images], dim=1).double() / 255.0
    return DataProfile(len(images), grey, int(np.median(sides)), *_mean_std(rgb), *_mean_std(grey_pixels))


def _mean_std(pixels: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (C, N) values; std at least 1e-3 (a blank set must not divide by 0)."""
    mean = tuple(round(float(v), 4) for v in pixels.mean(dim=1))
    std = tuple(round(max(float(v), 1e-3), 4) for v in pixels.std(dim=1))
    return mean, std


def size_for(native: int, step: int = SIZE_STEP, high: int = MAX_SIZE) -> int:
    """The input size for images of median shorter side ``native``: the native size rounded up to a
    multiple of ``step``, within [32, ``high``] (small images are not blown up beyond what the
    backbone's strides need; large ones are not trained at full size on a CPU: pass --img-size for that)."""
    return int(min(high, max(MIN_SIZE, step * math.ceil(native / step))))


@dataclass(frozen=True)
class FlipCheck:
    """The held-out check behind the flip default: accuracy as is and mirrored, and what it chose."""

    accuracy: float
    mirrored_accuracy: float
    chance: float
    tolerance: float
    images: int
    hflip: bool
    checked: bool = True  # False: one class, or under 2 images of one, leaves nothing to compare

    @property
    def reason(self) -> str:
        if not self.checked:
            return (f"{self.images} sampled images hold one class or under 2 images of one: nothing to check, "
                    "flips on as for photos")
        scores = (f"a pixel classifier scores {self.accuracy:.3f} on held-out training images and "
                  f"{self.mirrored_accuracy:.3f} on them mirrored")
        if self.hflip:
            if self.accuracy - self.chance < self.tolerance:
                return f"{scores}, near chance ({self.chance:.3f}): pixels cannot tell, flips on as for photos"
            return f"{scores}: mirrored images read the same"
        return f"{scores}: mirroring changes what the images mean"

    def as_dict(self) -> dict:
        return {**asdict(self), "reason": self.reason}


def _features(images: list[torch.Tensor]) -> torch.Tensor:
    small = [F.interpolate(im[None].float(), size=(FLIP_SIDE, FLIP_SIDE), mode="area")[0] for im in images]
    return torch.stack(small).flatten(1) / 255.0


def flip_keeps_labels(sources: Sequence, labels: Sequence[int], mode: str, seed: int = 0) -> FlipCheck:
    """Whether horizontal flips keep the labels of these images (see the module docstring)."""
    keep = sample_indices(len(sources), FLIP_SAMPLE, seed)
    labels = np.asarray(labels)[keep]
    return flip_check([decode_tensor(sources[int(i)], mode) for i in keep], labels, seed)


def flip_check(images: Sequence[torch.Tensor], labels: Sequence[int], seed: int = 0) -> FlipCheck:
    """The check of :func:`flip_keeps_labels` on decoded (C, H, W) images (or object crops: detection
    and segmentation ask it of the objects, whose class is what a flip could change)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True) if len(y) else (np.array([]), np.array([0]))
    if len(classes) < 2 or counts.min() < 2:
        return FlipCheck(0.0, 0.0, 1.0, 0.0, len(y), True, checked=False)
    x = _features(list(images))
    fit_idx, check_idx = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    model = LogisticRegression(max_iter=300, C=1.0)
    model.fit(x[fit_idx].numpy(), y[fit_idx])
    mirrored = _features([images[int(i)].flip(-1) for i in check_idx])
    accuracy = float((model.predict(x[check_idx].numpy()) == y[check_idx]).mean())
    mirrored_accuracy = float((model.predict(mirrored.numpy()) == y[check_idx]).mean())
    n = len(check_idx)
    tolerance = max(0.03, 2.0 * math.sqrt(max(accuracy * (1 - accuracy), 0.01) / n))
    chance = float(counts.max() / counts.sum())
    hflip = accuracy - mirrored_accuracy <= tolerance
    return FlipCheck(round(accuracy, 4), round(mirrored_accuracy, 4), round(chance, 4), round(tolerance, 4),
                     len(y), hflip)

DETECT_MAX_SIZE = 320  # a larger image is shrunk to this unless its small objects would fall below:
MIN_OBJECT_SIDE = 8  # pixels: two cells of the finest pyramid level (stride 4)
DETECT_STEP = 32  # the deepest stride the FPN may read


def detection_size_for(native: int, small_side: float) -> tuple[int, str]:
    """The detector's input size for images of median shorter side ``native`` whose small objects
    (10th percentile of the boxes' shorter sides) are ``small_side`` px, and why.

    Small images are not blown up: the native size rounded up to a multiple of 32. Images above
    ``DETECT_MAX_SIZE`` are shrunk to it unless that would bring the small objects under
    ``MIN_OBJECT_SIDE`` px, in which case they are shrunk only as far as those objects allow."""
    native_size = DETECT_STEP * max(1, math.ceil(native / DETECT_STEP))
    why = f"the images' median shorter side is {native} px, the 10th percentile of the objects' shorter side {small_side:.0f} px"
    if native_size <= DETECT_MAX_SIZE:
        return native_size, f"{why}: the native size, rounded up to a multiple of {DETECT_STEP}"
    needed = DETECT_STEP * math.ceil(MIN_OBJECT_SIDE * native / max(small_side, 1e-6) / DETECT_STEP)
    size = int(min(native_size, max(DETECT_MAX_SIZE, needed)))
    return size, f"{why}: shrunk to {size} px, which keeps those objects >= {MIN_OBJECT_SIDE} px where possible"


def region_crops(image: torch.Tensor, boxes: np.ndarray, margin: float = 0.1) -> list[torch.Tensor]:
    """(C, H, W) image, (N, 4) ``x1 y1 x2 y2`` boxes -> one crop per box, widened by ``margin`` of its
    size (the flip check reads objects, not whole scenes)."""
    _, height, width = image.shape
    crops = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        dx, dy = margin * (x2 - x1) + 1, margin * (y2 - y1) + 1
        left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
        right, bottom = min(width, math.ceil(x2 + dx)), min(height, math.ceil(y2 + dy))
        if right - left >= 2 and bottom - top >= 2:
            crops.append(image[:, top:bottom, left:right])
    return crops
