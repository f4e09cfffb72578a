"""Semantic-segmentation data: image + class-mask pairs from a folder or from ``builtin:shapes``.

A mask folder looks like::

    DIR/images/NAME.png|jpg      the images
    DIR/masks/NAME.png           one class-index mask per image (palette or 8-bit grey PNG)
    DIR/classes.txt              optional: one class name per line, line i = index i

Pixel value 255 means "ignore" (not scored, no loss). Pairs that cannot be used (an unreadable
image, no mask, a mask of another size than its image, an index beyond the classes) are skipped,
each kept in ``SegmentationData.skipped`` with its reason and named in one warning line
(``omnivis.data.skipped``), or raise ``DataError`` with ``strict``. :class:`SegmentationDataset`
serves ``(image tensor, mask tensor)`` pairs with augmentation seeded by ``(seed, epoch, index)``;
the mask goes through the same geometric transform as the image (torchvision ``tv_tensors.Mask``:
nearest neighbour), so they stay aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from omnivis.data.builtin import SHAPE_CLASSES, make_shapes
from omnivis.data.decode import decode_tensor
from omnivis.data.images import (
    IMAGE_EXTENSIONS,
    array_to_image,
    check_image,
    load_image,
)
from omnivis.data.shards import is_shard_dir, read_segmentation_shards
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import ConfigError, DataError
from omnivis.seeding import mix_seed, reseed_torch

IGNORE_INDEX = 255
BACKGROUND = "background"
MASK_MODES = ("P", "L")  # palette or 8-bit index PNGs: the pixel value is the class index


@dataclass
class MaskSample:
    """One image and its class mask: paths on disk or in-memory arrays (H x W uint8 for masks)."""

    image: str | Path | np.ndarray
    mask: str | Path | np.ndarray
    name: str


@dataclass
class SegmentationData:
    """Samples plus the class names (index i = class i; 255 = ignore) and what was skipped.

    ``skipped`` holds ``(file, reason)`` for every pair left out, the file relative to the folder
    (``images/a.png`` or ``masks/a.png``, whichever is at fault); see ``omnivis.data.skipped``.
    """

    samples: list[MaskSample]
    classes: list[str]
    source: str
    skipped: Skipped = field(default_factory=list)

    def subset(self, indices: Sequence[int]) -> SegmentationData:
        return SegmentationData([self.samples[int(i)] for i in indices], self.classes, self.source, list(self.skipped))

    def __len__(self) -> int:
        return len(self.samples)


def read_mask(path: str | Path) -> np.ndarray:
    """A palette or 8-bit grey PNG -> (H, W) uint8 class indices; any other mode is a ``DataError``."""
    try:
        with Image.open(path) as im:
            if im.mode not in MASK_MODES:
                raise DataError(
                    f"{path}: mask mode is {im.mode}; masks must be palette (P) or 8-bit grey (L) PNGs "
                    "whose pixel values are class indices"
                )
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read mask ({err})") from None


def _image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height), None) from the header only, or (None, why the file is unreadable)."""
    reason = check_image(path)
    if reason is not None:
        return None, reason
    with Image.open(path) as im:
        return im.size, None


def read_mask_folder(root: str | Path, strict: bool = False) -> SegmentationData:
    """Read ``root/images`` + ``root/masks`` (+ optional ``classes.txt``) into ``SegmentationData``.

    Without ``classes.txt`` the classes are named "0" .. "K" for the largest index K found. Every mask
    is decoded once here (masks are small), so a bad pair is reported before training starts.

    Raises:
        DataError: a missing folder, no usable pairs, or (with ``strict``) any bad pair.
    """
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; a mask folder needs images/ and masks/ sub-folders")
    classes: list[str] | None = None
    if (root / "classes.txt").exists():
        classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
        if not classes:
            raise DataError(f"{root / 'classes.txt'}: empty; list one class name per line (line 1 = index 0)")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not images:
        raise DataError(f"{images_dir}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    samples, largest = [], 0
    skipped: Skipped = []
    for image_path in images:
        mask_path = masks_dir / f"{image_path.stem}.png"
        problem: tuple[Path, str] | None = None  # (the file at fault, why)
        if not mask_path.exists():
            problem = image_path, f"no mask {mask_path.name} in {masks_dir}"
        else:
            size, unreadable = _image_size(image_path)
            mask = read_mask(mask_path)
            valid = mask[mask != IGNORE_INDEX]
            top = int(valid.max()) if valid.size else 0
            if size is None:
                problem = image_path, f"unreadable image ({unreadable})"
            elif (mask.shape[1], mask.shape[0]) != size:
                problem = mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {size[0]}x{size[1]}"
            elif classes is not None and top >= len(classes):
                problem = mask_path, f"class index {top} but classes.txt lists {len(classes)} classes"
            else:
                largest = max(largest, top)
        if problem is None:
            samples.append(MaskSample(image_path, mask_path, image_path.stem))
            continue
        at_fault, reason = problem
        if strict:
            raise DataError(f"{at_fault}: {reason}")
        skipped.append((at_fault.relative_to(root).as_posix(), reason))
    warn_skipped(skipped, "image/mask pair", root)
    if not samples:
        raise DataError(f"{root}: no usable image/mask pairs ({len(skipped)} skipped)")
    if classes is None:
        classes = [str(i) for i in range(max(largest, 1) + 1)]
    return SegmentationData(samples, classes, str(root), skipped)


def shapes_class_map(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Instance masks (N, H, W) bool + labels (N,) -> (H, W) uint8: 0 background, label + 1 per object,
    later objects painted over earlier ones."""
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    for mask, label in zip(masks, labels):
        out[mask] = int(label) + 1
    return out


def load_shapes_segmentation(n: int, img_size: int = 64, seed: int = 0) -> SegmentationData:
    """``builtin:shapes`` as segmentation data: classes background + circle, square, triangle."""
    scenes = make_shapes(n, img_size, seed).scenes
    samples = [
        MaskSample(s.image, shapes_class_map(s.masks, s.labels), f"shapes-seed{seed}/{i:04d}") for i, s in enumerate(scenes)
    ]
    return SegmentationData(samples, [BACKGROUND, *SHAPE_CLASSES], f"builtin:shapes(seed={seed})")


def resolve_segmentation_data(spec: str, strict: bool = False) -> SegmentationData:
    """A mask folder or segmentation shards (``omnivis data pack``: a folder or an ``s3://`` URL) -> data.
    ``builtin:shapes`` has explicit train/test seeds, so tasks build it with
    :func:`load_shapes_segmentation` themselves; other built-ins have no masks."""
    if spec.startswith("builtin:"):
        raise DataError(f"{spec}: no masks in this built-in; segmentation supports builtin:shapes or a mask folder")
    if is_shard_dir(spec):
        return read_segmentation_shards(spec, strict=strict)
    return read_mask_folder(spec, strict=strict)


# ----------------------------------------------------------------------------------------------
# Loading and augmentation
# ----------------------------------------------------------------------------------------------


def load_pair(sample: MaskSample, mode: str) -> tuple[Image.Image, np.ndarray]:
    """The decoded image (through the one loader) and its (H, W) uint8 mask."""
    image = array_to_image(sample.image, mode) if isinstance(sample.image, np.ndarray) else load_image(sample.image, mode)
    mask = sample.mask if isinstance(sample.mask, np.ndarray) else read_mask(sample.mask)
    return image, mask


@dataclass(kw_only=True)
class MaskAugment:
    """Training augmentation applied jointly to image and mask.

    Attributes:
        hflip: random horizontal flips; None (``train segment``'s default): on unless a held-out check
            on the class regions of the training images says mirroring changes their class.
        scale_min: smallest area fraction of the random resized crop (1: no crop).
        color_jitter: brightness/contrast/saturation strength on the image only (0: off).
    """

    hflip: bool | None = None
    scale_min: float = 0.5
    color_jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_min <= 1.0:
            raise ConfigError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if self.color_jitter < 0:
            raise ConfigError(f"color_jitter must be >= 0, got {self.color_jitter}")


def build_mask_transform(img_size: int, mean: Sequence[float], std: Sequence[float], augment: MaskAugment | None) -> v2.Compose:
    """A v2 pipeline over ``(tv_tensors.Image uint8, tv_tensors.Mask)``; ``augment=None`` is evaluation
    (resize only). Masks are resized with nearest neighbour by torchvision itself."""
    steps: list[v2.Transform] = []
    if augment is None:
        steps.append(v2.Resize((img_size, img_size), antialias=True))
    else:
        # square crops only: stretching would turn squares into rectangles and circles into ellipses
        steps.append(v2.RandomResizedCrop((img_size, img_size), scale=(augment.scale_min, 1.0), ratio=(1.0, 1.0),
                                          antialias=True))
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.color_jitter > 0:
            j = augment.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j if len(mean) == 3 else 0))
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def to_tv_tensors(image: Image.Image, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """PIL image + (H, W) uint8 mask -> (C, H, W) uint8 Image and (H, W) int64 Mask."""
    array = np.asarray(image)
    array = array[:, :, None] if array.ndim == 2 else array
    return (
        tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1)),
        tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64))),
    )


class SegmentationDataset(Dataset):
    """``SegmentationData`` as ``(image (C, S, S) float, mask (S, S) int64)`` pairs.

    Items are addressed by ``(epoch, index)`` (from ``EpochSampler``) or a plain index; each item's
    augmentation is drawn from ``mix_seed(seed, epoch, index)``, so a resumed run sees the same pixels.
    """

    def __init__(self, data: SegmentationData, transform: v2.Compose, mode: str = "RGB", seed: int = 0) -> None:
        self.data = data
        self.transform = transform
        self.mode = mode
        self.seed = seed
        self.decoded: list[torch.Tensor | None] | None = None  # filled by ``data.cache.cache_decoded``

    def __len__(self) -> int:
        return len(self.data.samples)

    def sources(self) -> list:
        return [sample.image for sample in self.data.samples]

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Pair ``index``: the image (cached, or decoded now) and its mask, as tv_tensors."""
        sample = self.data.samples[index]
        cached = self.decoded[index] if self.decoded is not None else None
        image = cached if cached is not None else decode_tensor(sample.image, self.mode)
        mask = sample.mask if isinstance(sample.mask, np.ndarray) else read_mask(sample.mask)
        return tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, mask = self.load(index)
        with torch.random.fork_rng(devices=[]):
            reseed_torch(mix_seed(self.seed, epoch, index))
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
