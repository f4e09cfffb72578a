"""Multi-task data: images with a class label, a class mask and boxes, any of which may be missing.

``builtin:shapes`` carries all three: the class is the scene's most visible shape (as
``builtin:shapes`` for classification), the mask is background + shapes (as for segmentation) and
the boxes are the objects' boxes (as for detection). :func:`drop_labels` keeps each kind of label
for a seeded fraction of the images only, to model datasets where an image carries only some label
types. :class:`MultitaskDataset` serves items addressed by ``(epoch, index)``; its augmentation moves
the image, the mask and the boxes together (torchvision v2 with ``tv_tensors``).

A COCO file (:func:`load_coco_multitask`) gives boxes and, from the instance masks, a semantic mask;
an optional ``path,label`` CSV gives image-level class labels. File images stay paths and are read
by ``load_image`` in ``__getitem__``, so a large dataset is never held in memory as pixels.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from omnivis.data.builtin import SHAPE_CLASSES, make_shapes
from omnivis.data.coco import read_coco, write_coco
from omnivis.data.detection import shapes_detection_data
from omnivis.data.images import array_to_image, check_image, load_image
from omnivis.data.masks import IGNORE_INDEX, shapes_class_map, to_tv_tensors
from omnivis.data.readers import MANIFEST_HEADER
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import DataError
from omnivis.fileio import atomic_write_bytes
from omnivis.seeding import mix_seed, reseed_torch


@dataclass
class MultitaskData:
    """Parallel lists, one entry per image.

    Attributes:
        images: (H, W, 3) uint8 arrays (built-in data) or image paths (file data, read when used).
        masks: (H, W) uint8 class masks (0 background, k + 1 for ``det_classes[k]``), or None where
            the image has no mask.
        labels: indices into ``classes``, -1 where the image has no class label.
        source: how reports name the data.
        boxes: (N, 4) float32 xyxy pixel boxes, or None where the image has no box labels (an
            empty list: no image has any).
        box_labels: (N,) int64 indices into ``det_classes`` (None alongside ``boxes``).
        classes: the classification head's classes.
        det_classes: the detection head's classes; the segmentation classes are background + these.
        names: how errors name each image (empty: ``source`` and the index).
        skipped: ``(name, reason)`` for every input left out while reading: COCO records
            (``ann.json annotation id 17``), unreadable images (``b.png``) and CSV rows
            (``labels.csv line 4``); see ``omnivis.data.skipped``.
    """

    images: list[np.ndarray | Path]
    masks: list[np.ndarray | None]
    labels: list[int]
    source: str
    boxes: list[np.ndarray | None] = field(default_factory=list)
    box_labels: list[np.ndarray | None] = field(default_factory=list)
    classes: list[str] = field(default_factory=lambda: list(SHAPE_CLASSES))
    det_classes: list[str] = field(default_factory=lambda: list(SHAPE_CLASSES))
    names: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self.names[index] if self.names else f"{self.source}[{index}]"

    def image(self, index: int, mode: str = "RGB") -> Image.Image:
        """Image ``index`` through the one loader (arrays: ``array_to_image``; files: ``load_image``)."""
        source = self.images[index]
        return array_to_image(source, mode) if isinstance(source, np.ndarray) else load_image(source, mode)

    def box_target(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(boxes (N, 4), labels (N,)) of image ``index``, or None when it has no box labels."""
        if index >= len(self.boxes) or self.boxes[index] is None:
            return None
        return self.boxes[index], self.box_labels[index]

    def subset(self, indices: Sequence[int]) -> MultitaskData:
        """The images at ``indices`` (in that order), with their labels."""
        def pick(values: list) -> list:
            return [values[int(i)] for i in indices] if values else []

        return replace(self, images=pick(self.images), masks=pick(self.masks), labels=pick(self.labels),
                       boxes=pick(self.boxes), box_labels=pick(self.box_labels), names=pick(self.names),
                       skipped=list(self.skipped))

    def __add__(self, other: MultitaskData) -> MultitaskData:
        def boxes(d: MultitaskData, attr: str) -> list:
            return list(getattr(d, attr)) or [None] * len(d)

        def names(d: MultitaskData) -> list[str]:
            return [d.name(i) for i in range(len(d))]

        return MultitaskData(self.images + other.images, self.masks + other.masks, self.labels + other.labels,
                             f"{self.source} + {other.source}", boxes(self, "boxes") + boxes(other, "boxes"),
                             boxes(self, "box_labels") + boxes(other, "box_labels"), list(self.classes),
                             list(self.det_classes), names(self) + names(other),
                             list(self.skipped) + list(other.skipped))


def load_shapes_multitask(n: int, img_size: int, seed: int) -> MultitaskData:
    """Scenes with every label: class = the most visible object's shape, mask = background + shapes,
    boxes = the objects' boxes with their shape labels."""
    scenes = make_shapes(n, img_size, seed).scenes
    labels = [int(s.labels[int(np.argmax(s.masks.sum(axis=(1, 2))))]) for s in scenes]
    return MultitaskData(
        [s.image for s in scenes], [shapes_class_map(s.masks, s.labels) for s in scenes], labels,
        f"builtin:shapes(seed={seed})",
        [s.boxes.astype(np.float32).reshape(-1, 4) for s in scenes], [s.labels.astype(np.int64) for s in scenes],
        names=[f"shapes-seed{seed}/{i:04d}" for i in range(len(scenes))],  # as segment and detect name them
    )


def load_coco_multitask(json_path: str | Path, images_dir: str | Path | None = None,
                        labels_csv: str | Path | None = None, strict: bool = False) -> MultitaskData:
    """A COCO file (+ an optional ``path,label`` CSV) as multi-task data; images stay paths.

    Boxes come from the annotations (an image without any has empty boxes: "nothing here" is a
    label). The semantic mask paints each instance mask with its class + 1 over background 0, in
    the file's annotation order, so where instances overlap the later one wins (as
    ``builtin:shapes``). Crowd regions (``iscrowd: 1``: no box) are painted with their class first,
    under the instances. An image gets no mask (its segmentation loss is skipped) when one of its
    annotations has no segmentation, or when the file has no segmentation at all. Class labels come
    from ``labels_csv`` (classes: its sorted label names); images it does not list have none.

    Bad records are skipped, each kept in ``skipped`` with its reason (one warning line per
    file), or raise ``DataError`` with ``strict``: whatever ``read_coco`` rejects, image files that
    are not readable images, and CSV rows naming an image that is not in the COCO file (or listing
    it twice).

    Args:
        json_path: the COCO annotations JSON.
        images_dir: where its ``file_name``s are (default: the JSON's folder); relative CSV paths
            are resolved against it too.
        labels_csv: ``path,label`` rows, paths relative to ``images_dir`` or absolute.
        strict: the first bad record is an error.
    """
    coco = read_coco(json_path, images_dir, strict=strict, per_image_masks=True)
    records, unreadable = [], []
    for record in coco.records:
        reason = check_image(record.source)
        if reason is None:
            records.append(record)
        elif strict:
            raise DataError(f"{record.source}: {reason}")
        else:
            unreadable.append((record.name, reason))
    warn_skipped(unreadable, "unreadable image", Path(json_path))
    if not records:
        raise DataError(f"{json_path}: none of its images could be read")
    labels, classes, bad_rows = [-1] * len(records), [], []
    if labels_csv is not None:
        root = Path(images_dir) if images_dir is not None else Path(json_path).parent
        labels, classes, bad_rows = read_image_labels(labels_csv, root, [Path(r.source) for r in records], strict)
    return MultitaskData(
        images=[Path(r.source) for r in records],
        masks=[class_map_with_crowds(r) if r.masks is not None else None for r in records],
        labels=labels,
        source=str(json_path),
        boxes=[r.boxes.astype(np.float32).reshape(-1, 4) for r in records],
        box_labels=[r.labels.astype(np.int64) for r in records],
        classes=classes,
        det_classes=list(coco.classes),
        names=[r.name for r in records],
        skipped=list(coco.skipped) + unreadable + bad_rows,
    )


def class_map_with_crowds(record) -> np.ndarray:
    """A ``DetectionRecord``'s semantic mask: crowd regions, then its instances over them."""
    if record.crowd_masks is None:
        return shapes_class_map(record.masks, record.labels)
    return shapes_class_map(np.concatenate([record.crowd_masks, record.masks]),
                            np.concatenate([record.crowd_labels, record.labels]))


def read_image_labels(labels_csv: str | Path, root: Path, images: Sequence[Path],
                      strict: bool = False) -> tuple[list[int], list[str], Skipped]:
    """A ``path,label`` CSV -> (a label index per image in ``images``, -1 if unlisted; the classes,
    sorted; the rows skipped, as ``("labels.csv line 4", reason)``).

    A row whose image is not among ``images`` (or that lists an image a second time) is skipped
    with its reason, or raises ``DataError`` naming ``file:line`` with ``strict``. The classes are the
    labels of the rows kept, so every label is one of them.
    """
    path = Path(labels_csv)
    expected = ",".join(MANIFEST_HEADER)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError(f"{path}: labels CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read labels CSV ({exc})") from None
    header = tuple(cell.strip().lower() for cell in rows[0][:2]) if rows else ()
    if header != MANIFEST_HEADER:
        raise DataError(f"{path}: expected the header '{expected}', found '{','.join(rows[0]) if rows else 'an empty file'}'")
    where = {os.path.normpath(p.resolve()): i for i, p in enumerate(images)}
    chosen: dict[int, str] = {}
    skipped: Skipped = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{line}: expected '{expected}', found '{','.join(row)}'")
        written, label = row[0].strip(), row[1].strip()
        file = Path(written).expanduser()
        index = where.get(os.path.normpath((file if file.is_absolute() else root / file).resolve()))
        problem = (f"'{written}' is not an image of the COCO file" if index is None
                   else f"'{written}' is listed twice" if index in chosen else None)
        if problem is None:
            chosen[index] = label
        elif strict:
            raise DataError(f"{path}:{line}: {problem}")
        else:
            skipped.append((f"{path.name} line {line}", problem))
    warn_skipped(skipped, "bad row", path)
    classes = sorted(set(chosen.values()))
    if not classes:
        raise DataError(f"{path}: no row names an image of the COCO file")
    labels = [classes.index(chosen[i]) if i in chosen else -1 for i in range(len(images))]
    return labels, classes, skipped


def align_classes(data: MultitaskData, classes: Sequence[str], det_classes: Sequence[str]) -> MultitaskData:
    """Relabel ``data`` into a model's class order (by name), so another file can be evaluated.

    Raises:
        DataError: ``data`` has a class the model does not know.
    """
    def remap(have: Sequence[str], want: Sequence[str], kind: str) -> np.ndarray:
        unknown = [c for c in have if c not in want]
        if unknown:
            raise DataError(f"{data.source}: {kind} class '{unknown[0]}' is not one of the model's ({', '.join(want)})")
        return np.array([list(want).index(c) for c in have], dtype=np.int64)

    if list(data.classes) == list(classes) and list(data.det_classes) == list(det_classes):
        return data
    labels = list(data.labels)
    if data.classes:
        cls_map = remap(data.classes, classes, "image")
        labels = [int(cls_map[y]) if y >= 0 else -1 for y in data.labels]
    det_map = remap(data.det_classes, det_classes, "object")
    lut = np.arange(256, dtype=np.uint8)  # mask values: 0 background, k + 1 class k, 255 ignored
    lut[1 : len(det_map) + 1] = det_map + 1
    return replace(
        data, labels=labels, classes=list(classes), det_classes=list(det_classes),
        masks=[lut[m] if m is not None else None for m in data.masks],
        box_labels=[det_map[b] if b is not None else None for b in data.box_labels],
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
    return replace(
        data,
        masks=[m if i in keep_seg else None for i, m in enumerate(data.masks)],
        labels=[y if i in keep_cls else -1 for i, y in enumerate(data.labels)],
        boxes=[b if i in keep_det else None for i, b in enumerate(boxes)],
        box_labels=[b if i in keep_det else None for i, b in enumerate(box_labels)],
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
        picture = self.data.image(index, self.mode)
        size = (picture.height, picture.width)
        mask = self.data.masks[index]
        if mask is not None and mask.shape != size:
            raise DataError(f"{self.data.name(index)}: the mask is {mask.shape[0]}x{mask.shape[1]} but the image "
                            f"is {size[0]}x{size[1]}")
        mask = mask if mask is not None else np.full(size, IGNORE_INDEX, np.uint8)
        image, mask_t = to_tv_tensors(picture, mask)
        box_target = self.data.box_target(index)
        target = None
        with torch.random.fork_rng(devices=[]):
            reseed_torch(mix_seed(self.seed, epoch, index))
            if box_target is None:
                image, mask_t = self.transform(image, mask_t)
            else:
                boxes = tv_tensors.BoundingBoxes(torch.as_tensor(box_target[0], dtype=torch.float32).reshape(-1, 4),
                                                 format="XYXY", canvas_size=size)
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


def write_shapes_coco(folder: str | Path, n: int = 300, img_size: int = 64, seed: int = 0) -> Path:
    """``builtin:shapes`` scenes as files a user would have: ``annotations.json`` (COCO: boxes, RLE
    masks), PNG images and ``labels.csv`` (``path,label``: each scene's most visible shape, as
    :func:`load_shapes_multitask`); returns the JSON path. For trying the file path of every task."""
    folder = Path(folder)
    data = shapes_detection_data(n, img_size, seed)
    json_path = write_coco(data, folder / "annotations.json")
    rows = ["path,label"] + [  # write_coco names the images 000000.png, 000001.png ...
        f"{i:06d}.png,{data.classes[int(r.labels[int(np.argmax(r.masks.sum(axis=(1, 2))))])]}"
        for i, r in enumerate(data.records)
    ]
    atomic_write_bytes(folder / "labels.csv", ("\n".join(rows) + "\n").encode("utf-8"))
    return json_path
