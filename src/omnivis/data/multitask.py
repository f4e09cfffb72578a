"""Multi-task data: images with a class label, a class mask and boxes, any of which may be missing.

``builtin:shapes`` carries all three: the class is the scene's most visible shape (as
``builtin:shapes`` for classification), the mask is background + shapes (as for segmentation) and
the boxes are the objects' boxes (as for detection). :func:`drop_labels` keeps each kind of label
for a seeded fraction of the images only, to model datasets where an image carries only some label
types. :class:`MultitaskDataset` serves items addressed by ``(epoch, index)``; its augmentation moves
the image, the mask and the boxes together (torchvision v2 with ``tv_tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from omnivis.data.builtin import make_shapes
from omnivis.data.datamodule import mix_seed, reseed_torch
from omnivis.data.images import array_to_image
from omnivis.data.masks import IGNORE_INDEX, shapes_class_map, to_tv_tensors


@dataclass
class MultitaskData:
    """Parallel lists, one entry per image.

    Attributes:
        images: (H, W, 3) uint8 arrays.
        masks: (H, W) uint8 class masks, or None where the image has no mask.
        labels: class indices, -1 where the image has no class label.
        source: how reports name the data.
        boxes: (N, 4) float32 xyxy pixel boxes, or None where the image has no box labels (an
            empty list: no image has any).
        box_labels: (N,) int64 class indices of those boxes (None alongside ``boxes``).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    labels: list[int]
    source: str
    boxes: list[np.ndarray | None] = field(default_factory=list)
    box_labels: list[np.ndarray | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def box_target(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(boxes (N, 4), labels (N,)) of image ``index``, or None when it has no box labels."""
        if index >= len(self.boxes) or self.boxes[index] is None:
            return None
        return self.boxes[index], self.box_labels[index]

    def __add__(self, other: "MultitaskData") -> "MultitaskData":
        def boxes(d: MultitaskData, attr: str) -> list:
            return list(getattr(d, attr)) or [None] * len(d)

        return MultitaskData(self.images + other.images, self.masks + other.masks, self.labels + other.labels,
                             f"{self.source} + {other.source}", boxes(self, "boxes") + boxes(other, "boxes"),
                             boxes(self, "box_labels") + boxes(other, "box_labels"))


def load_shapes_multitask(n: int, img_size: int, seed: int) -> MultitaskData:
    """Scenes with every label: class = the most visible object's shape, mask = background + shapes,
    boxes = the objects' boxes with their shape labels."""
    scenes = make_shapes(n, img_size, seed).scenes
    labels = [int(s.labels[int(np.argmax(s.masks.sum(axis=(1, 2))))]) for s in scenes]
    return MultitaskData(
        [s.image for s in scenes], [shapes_class_map(s.masks, s.labels) for s in scenes], labels,
        f"builtin:shapes(seed={seed})",
        [s.boxes.astype(np.float32).reshape(-1, 4) for s in scenes], [s.labels.astype(np.int64) for s in scenes],
    )


def drop_labels(data: MultitaskData, seg_fraction: float, cls_fraction: float, seed: int,
                det_fraction: float = 1.0) -> MultitaskData:
    """Keep masks for a seeded ``seg_fraction`` of the images, class labels for ``cls_fraction`` and
    boxes for ``det_fraction``; each kind draws its own images (so the fractions are independent)."""
    n = len(data)

    def keep(fraction: float, stream: int) -> set[int]:
        return set(np.random.default_rng(mix_seed(seed, stream)).permutation(n)[: round(fraction * n)].tolist())

    keep_seg, keep_cls, keep_det = keep(seg_fraction, 1), keep(cls_fraction, 2), keep(det_fraction, 3)
    boxes = list(data.boxes) or [None] * n
    box_labels = list(data.box_labels) or [None] * n
    return MultitaskData(
        data.images,
        [m if i in keep_seg else None for i, m in enumerate(data.masks)],
        [y if i in keep_cls else -1 for i, y in enumerate(data.labels)],
        data.source,
        [b if i in keep_det else None for i, b in enumerate(boxes)],
        [b if i in keep_det else None for i, b in enumerate(box_labels)],
    )


# boxes that a crop pushed (partly) out of the image are clipped, and dropped with their labels if < 1 px
_SANITIZE = v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)])


class MultitaskDataset(Dataset):
    """``(image (C, S, S) float, mask (S, S) int64 (255: unlabelled), label (-1: none), target)`` items.

    ``target`` is ``{"boxes": (N, 4) float xyxy in the S x S input, "labels": (N,) int64}`` or None
    when the image has no box labels. Items are addressed by ``(epoch, index)``; the augmentation is
    seeded by ``(seed, epoch, index)`` and moves image, mask and boxes together.
    """

    def __init__(self, data: MultitaskData, transform, mode: str = "RGB", seed: int = 0) -> None:
        self.data, self.transform, self.mode, self.seed = data, transform, mode, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, dict | None]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        array = self.data.images[index]
        mask = self.data.masks[index]
        mask = mask if mask is not None else np.full(array.shape[:2], IGNORE_INDEX, np.uint8)
        image, mask_t = to_tv_tensors(array_to_image(array, self.mode), mask)
        box_target = self.data.box_target(index)
        target = None
        with torch.random.fork_rng(devices=[]):
            reseed_torch(mix_seed(self.seed, epoch, index))
            if box_target is None:
                image, mask_t = self.transform(image, mask_t)
            else:
                boxes = tv_tensors.BoundingBoxes(torch.as_tensor(box_target[0], dtype=torch.float32).reshape(-1, 4),
                                                 format="XYXY", canvas_size=tuple(array.shape[:2]))
                # the boxes ride along: the random draws are the same as for image + mask alone
                image, mask_t, boxes = self.transform(image, mask_t, boxes)
                target = _SANITIZE({"boxes": boxes, "labels": torch.as_tensor(box_target[1], dtype=torch.int64)})
                target = {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"]}
        return image.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor), self.data.labels[index], target


def multitask_collate(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict | None]]:
    """Stack images (B, C, S, S), masks (B, S, S) and labels (B,); keep box targets as a list (each
    image has its own number of objects, or None)."""
    images, masks, labels, targets = zip(*batch)
    return torch.stack(images), torch.stack(masks), torch.tensor(labels, dtype=torch.int64), list(targets)
