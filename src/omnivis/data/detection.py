"""Detection and instance-segmentation data: built-in shapes, seeded dataset, COCO results.

A ``DetectionData`` (``omnivis.data.detection_records``) is a list of records (image, boxes,
labels, optional instance masks) plus the class names. It comes from ``builtin:shapes`` (generated
scenes, train and test drawn from different seeds) or a COCO JSON file
(``omnivis.data.coco.read_coco``); :func:`resolve_detection_data` turns what a user types into one.
The dataset is addressed by ``(epoch, index)`` like ``ImageClassificationDataset``, so every
augmentation draw is a function of (seed, epoch, index).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from omnivis.data.builtin import SHAPE_CLASSES, is_builtin_shapes, make_shapes
from omnivis.data.coco import read_coco
from omnivis.data.decode import decode_tensor
from omnivis.data.detection_records import DetectionData, DetectionRecord, mask_to_rle
from omnivis.data.shards import is_shard_dir, read_detection_shards
from omnivis.errors import DataError
from omnivis.fileio import atomic_write_bytes
from omnivis.seeding import mix_seed, reseed_torch

SHAPES_TRAIN_SEED = 0
SHAPES_TEST_SEED = 1


def shapes_detection_data(n: int, img_size: int = 64, seed: int = SHAPES_TRAIN_SEED) -> DetectionData:
    """``n`` generated scenes (circles, squares, triangles) with boxes and instance masks.

    Train scenes use seed 0 and test scenes seed 1 (:func:`resolve_detection_data`), so the two
    splits never share a scene.
    """
    scenes = make_shapes(n, img_size, seed).scenes
    records = [
        DetectionRecord(
            source=s.image, boxes=s.boxes.astype(np.float32), labels=s.labels.astype(np.int64), masks=s.masks,
            name=f"shapes-seed{seed}/{i:04d}", image_id=i,
        )
        for i, s in enumerate(scenes)
    ]
    return DetectionData(records, list(SHAPE_CLASSES), f"builtin:shapes (seed {seed})")


def resolve_detection_data(
    spec: str,
    images: str | Path | None = None,
    *,
    split: str = "train",
    num_train: int = 600,
    num_test: int = 200,
    img_size: int = 64,
    strict: bool = False,
) -> DetectionData:
    """What a user types as ``--data`` (and ``--images``) -> ``DetectionData``.

    Args:
        spec: ``builtin:shapes``, a COCO JSON file, or detection shards written by ``omnivis data pack``
            (a folder, or an ``s3://`` URL).
        images: the COCO images folder (default: the JSON's folder).
        split: for ``builtin:shapes``: ``train`` (seed 0, ``num_train`` scenes) or ``test`` (seed 1,
            ``num_test`` scenes). A COCO file is returned whole; the caller splits it.
        img_size: side of the generated scenes.
        strict: a bad COCO record is an error instead of being skipped with a warning.
    """
    if is_builtin_shapes(spec):
        if split not in ("train", "test"):
            raise DataError(f"builtin:shapes: split must be train or test, got '{split}'")
        if split == "train":
            return shapes_detection_data(num_train, img_size, SHAPES_TRAIN_SEED)
        return shapes_detection_data(num_test, img_size, SHAPES_TEST_SEED)
    if spec.startswith("builtin:"):
        raise DataError(f"{spec}: detection supports builtin:shapes or a COCO JSON file")
    if is_shard_dir(spec):
        if images is not None:
            raise DataError(f"{spec}: shards hold their images; --images is only for a COCO JSON file")
        return read_detection_shards(spec, strict=strict)
    path = Path(spec)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; detection needs a COCO JSON file (--data ann.json --images DIR)")
    if path.suffix.lower() != ".json":
        raise DataError(f"{path}: expected a COCO annotations .json file or builtin:shapes")
    return read_coco(path, images_dir=images, strict=strict)


# ----------------------------------------------------------------------------------------------
# Transforms and the dataset
# ----------------------------------------------------------------------------------------------


def build_detection_transform(
    img_size: int, *, train: bool, hflip: bool = True, scale_min: float = 0.6, photometric: bool = True
) -> Callable:
    """Box- and mask-aware transforms for ``(image, target)``; the output image is float in [0, 1].

    Training: photometric distortion, a random resized crop (area ``scale_min``..1, the scale
    jitter; 1 disables it), horizontal flip, then boxes that left the crop are dropped
    (``SanitizeBoundingBoxes``, which drops their labels and masks too). Eval: resize only.
    Normalization is left to the detector (its transform holds the bundle's mean/std).
    """
    steps: list = [v2.ToImage()]
    if train and photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if train and scale_min < 1.0:
        steps.append(v2.RandomResizedCrop((img_size, img_size), scale=(scale_min, 1.0), ratio=(0.75, 1.333), antialias=True))
    else:
        steps.append(v2.Resize((img_size, img_size), antialias=True))
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def record_target(record: DetectionRecord, height: int, width: int) -> dict:
    """The record's annotations as tv_tensors (so v2 transforms move them with the image)."""
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.as_tensor(record.labels, dtype=torch.int64).reshape(-1),
    }
    if record.masks is not None:
        target["masks"] = tv_tensors.Mask(torch.as_tensor(np.asarray(record.masks, dtype=bool)).to(torch.uint8))
    return target


class DetectionDataset(Dataset):
    """``DetectionData`` as ``(image (3, S, S) float in [0, 1], target dict)`` with seeded augmentation.

    The target holds ``boxes`` (N, 4) xyxy (``BoundingBoxes``), ``labels`` (N,) class indices and,
    with masks, ``masks`` (N, S, S) uint8 (``Mask``), plus ``index`` (the record's position).
    Items are addressed by ``(epoch, index)`` (from ``EpochSampler``) or a plain index.
    """

    mode = "RGB"

    def __init__(self, data: DetectionData, transform: Callable, seed: int = 0, masks: bool = False) -> None:
        self.data = data
        self.transform = transform
        self.seed = seed
        self.masks = masks
        self.decoded: list[torch.Tensor | None] | None = None  # filled by ``data.cache.cache_decoded``

    def __len__(self) -> int:
        return len(self.data.records)

    def sources(self) -> list:
        return [record.source for record in self.data.records]

    def load(self, index: int) -> torch.Tensor:
        """Record ``index``'s image as a (3, H, W) uint8 tensor: cached, or decoded now."""
        if self.decoded is not None and self.decoded[index] is not None:
            return self.decoded[index]
        return decode_tensor(self.data.records[index].source, "RGB")

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        record = self.data.records[index]
        image = self.load(index)
        height, width = image.shape[-2:]
        if record.masks is not None and record.masks.shape[1:] != (height, width):
            raise DataError(f"{record.name}: masks are {record.masks.shape[1:]} but the image is {height}x{width}")
        target = record_target(record if self.masks else replace(record, masks=None), height, width)
        with torch.random.fork_rng(devices=[]):
            reseed_torch(mix_seed(self.seed, epoch, index))
            tensor, target = self.transform(tv_tensors.Image(image), target)
        target["index"] = index
        return tensor, target


def detection_collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists: every image has its own number of objects."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# ----------------------------------------------------------------------------------------------
# COCO results
# ----------------------------------------------------------------------------------------------


def coco_results(predictions: Sequence[dict]) -> list[dict]:
    """Predictions -> COCO results entries.

    Args:
        predictions: one dict per image: ``image_id`` (int), ``boxes`` (N, 4) xyxy, ``scores`` (N,),
            ``category_ids`` (N,) COCO category ids, optional ``masks`` (N, H, W) bool.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"(, "segmentation": RLE)}]``.
    """
    results = []
    for pred in predictions:
        boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        cats = np.asarray(pred["category_ids"]).reshape(-1)
        masks = pred.get("masks")
        for i, (box, score, cat) in enumerate(zip(boxes, scores, cats)):
            x1, y1, x2, y2 = (float(v) for v in box)
            entry = {
                "image_id": int(pred["image_id"]),
                "category_id": int(cat),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 6),
            }
            if masks is not None:
                entry["segmentation"] = mask_to_rle(np.asarray(masks[i], dtype=bool))
            results.append(entry)
    return results


def write_coco_results(predictions: Sequence[dict], path: str | Path) -> Path:
    """Write predictions (see :func:`coco_results`) as a COCO results JSON file; returns the path."""
    text = json.dumps(coco_results(predictions)) + "\n"
    return atomic_write_bytes(Path(path), text.encode("utf-8"))
