"""COCO JSON -> ``DetectionData``: boxes, polygon and RLE masks, with bad records reported clearly.

Real annotation files contain mistakes. Rather than let one crash deep inside torchvision during
training, every annotation is checked here: a box partly outside its image is clipped; a box wholly
outside, a box with zero or negative size, an unknown category, an annotation pointing to a missing
image and a mask of the wrong size are skipped, each kept in ``DetectionData.skipped`` with its
reason (``("ann.json annotation id 17", "image 'a.jpg': box has negative width")``) and named in
one warning line (``omnivis.data.skipped``), or raise ``DataError`` with ``strict=True``. Crowd
annotations (``iscrowd: 1``) are left out of the boxes, as detectors usually train; with
``per_image_masks`` their regions are kept apart for semantic masks.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from omnivis.data.detection_records import DetectionData, DetectionRecord, mask_to_rle
from omnivis.data.images import load_image
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import DataError
from omnivis.fileio import atomic_write_bytes


def _load_json(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: COCO annotations file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: not a COCO annotations file (needs 'images' and 'categories' lists)")
    return data


def _decode_segmentation(segmentation, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    """COCO polygon list or RLE -> ((H, W) bool mask, None), or (None, the problem)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list)]
        if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
            return None, "polygon needs at least 3 (x, y) points"
        rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool), None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            return None, f"mask is {size[0]}x{size[1]} but the image is {height}x{width}"
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        try:
            return mask_utils.decode(rle).astype(bool), None
        except Exception as err:  # pycocotools raises bare exceptions on corrupt counts
            return None, f"RLE mask cannot be decoded ({err})"
    return None, "segmentation is neither a polygon list nor an RLE"


def _check_box(bbox, height: int, width: int) -> tuple[list[float] | None, str | None]:
    """COCO ``[x, y, w, h]`` -> clipped ``[x1, y1, x2, y2]``, or (None, the problem)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, "bbox is not [x, y, width, height]"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None, "bbox holds non-numbers"
    if not all(np.isfinite([x, y, w, h])):
        return None, "bbox holds non-finite numbers"
    if w < 0 or h < 0:
        return None, f"box has negative {'width' if w < 0 else 'height'}"
    if w == 0 or h == 0:
        return None, f"box has zero {'width' if w == 0 else 'height'}"
    x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)
    if x2 <= x1 or y2 <= y1:
        return None, f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image"
    return [x1, y1, x2, y2], None


def read_coco(json_path: str | Path, images_dir: str | Path | None = None, strict: bool = False,
              per_image_masks: bool = False) -> DetectionData:
    """Read a COCO detection / instance-segmentation file (see :func:`_read_coco`)."""
    with warnings.catch_warnings():  # pycocotools' numpy-2 DeprecationWarning on every decode
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return _read_coco(json_path, images_dir, strict, per_image_masks)


def _read_coco(json_path: str | Path, images_dir: str | Path | None, strict: bool,
               per_image_masks: bool = False) -> DetectionData:
    """Read a COCO detection / instance-segmentation file.

    Args:
        json_path: the annotations JSON (``images``, ``annotations``, ``categories``).
        images_dir: where ``file_name``s are found (default: the JSON's folder).
        strict: raise ``DataError`` on the first bad record instead of skipping it.
        per_image_masks: decide masks per image instead (multi-task training): an image gets its
            (N, H, W) masks when each of its kept annotations has a segmentation (none: (0, H, W))
            and the file has at least one segmentation; else its ``masks`` is None. Crowd regions
            then go to ``crowd_masks``/``crowd_labels`` (a semantic mask paints them too).

    Returns:
        Records in the file's image order; class indices follow the categories sorted by id, and
        ``category_ids`` maps them back for results files. Masks are decoded (N, H, W) when every
        kept annotation has a segmentation, else every record's ``masks`` is None (boxes only).
    """
    path = Path(json_path)
    data = _load_json(path)
    root = Path(images_dir) if images_dir is not None else path.parent
    if not root.is_dir():
        raise DataError(f"{root}: images folder not found")
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    if not categories:
        raise DataError(f"{path}: has no categories")
    cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
    skipped: Skipped = []

    def bad(record: str, reason: str) -> None:
        """``record`` (``annotation id 17``) is left out for ``reason``, or (strict) is an error."""
        if strict:
            raise DataError(f"{path}: {record}: {reason}")
        skipped.append((f"{path.name} {record}", reason))

    images: dict[int, dict] = {}
    for entry in data["images"]:
        name = str(entry.get("file_name", ""))
        if not (root / name).is_file() or not name:
            bad(f"image id {entry.get('id')}", f"file '{name}' not found in {root}")
            continue
        if "width" not in entry or "height" not in entry:
            with Image.open(root / name) as im:
                entry = {**entry, "width": im.width, "height": im.height}
        images[int(entry["id"])] = entry

    per_image: dict[int, list[tuple[list[float], int, np.ndarray | None]]] = {i: [] for i in images}
    crowds: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in images}
    all_have_masks, any_masks = True, False
    known_ids = {int(e.get("id", -1)) for e in data["images"]}
    for ann in data.get("annotations", []):
        aid = ann.get("id", "?")
        image_id = int(ann.get("image_id", -1))
        if image_id not in images:
            if image_id not in known_ids:
                bad(f"annotation id {aid}", f"points to image id {image_id}, which is not in 'images'")
            continue  # an image already reported missing
        entry = images[image_id]
        record, image = f"annotation id {aid}", f"image '{entry['file_name']}'"
        crowd = bool(ann.get("iscrowd", 0))
        if crowd and not (per_image_masks and ann.get("segmentation")):
            continue
        category = ann.get("category_id")
        if category is None or int(category) not in cat_index:
            bad(record, f"{image}: unknown category id {category}")
            continue
        height, width = int(entry["height"]), int(entry["width"])
        if crowd:
            mask, problem = _decode_segmentation(ann["segmentation"], height, width)
            if problem:
                bad(record, f"{image}: {problem}")
            else:
                crowds[image_id].append((cat_index[int(category)], mask))
            continue
        mask = None
        segmentation = ann.get("segmentation")
        if segmentation:
            mask, problem = _decode_segmentation(segmentation, height, width)
            if problem:
                bad(record, f"{image}: {problem}")
                continue
        else:
            all_have_masks = False
        bbox = ann.get("bbox")
        if bbox is None and mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        box, problem = _check_box(bbox, height, width)
        if problem:
            bad(record, f"{image}: {problem}")
            continue
        any_masks = any_masks or mask is not None
        per_image[image_id].append((box, cat_index[int(category)], mask))

    warn_skipped(skipped, "bad record", path)
    records = []
    for image_id, entry in images.items():
        anns = per_image[image_id]
        height, width = int(entry["height"]), int(entry["width"])
        masks = None
        own = all(m is not None for _, _, m in anns)
        if all_have_masks or (per_image_masks and any_masks and own):
            masks = np.stack([m for _, _, m in anns]) if anns else np.zeros((0, height, width), dtype=bool)
        records.append(
            DetectionRecord(
                source=root / entry["file_name"],
                boxes=np.array([b for b, _, _ in anns], dtype=np.float32).reshape(-1, 4),
                labels=np.array([c for _, c, _ in anns], dtype=np.int64),
                masks=masks,
                name=str(entry["file_name"]),
                image_id=image_id,
                crowd_masks=np.stack([m for _, m in crowd]) if (crowd := crowds[image_id]) else None,
                crowd_labels=np.array([c for c, _ in crowd], dtype=np.int64) if crowd else None,
            )
        )
    if not records:
        raise DataError(f"{path}: no usable images")
    return DetectionData(
        records=records,
        classes=[str(c.get("name", c["id"])) for c in categories],
        source=str(path),
        category_ids=[int(c["id"]) for c in categories],
        skipped=skipped,
    )


def write_coco(data: DetectionData, json_path: str | Path, images_dir: str | Path | None = None) -> Path:
    """Write ``data`` as a COCO file plus PNG images (default: beside the JSON); returns the JSON path.

    Handy to turn ``builtin:shapes`` into a COCO dataset for trying the COCO path, or to export
    data after filtering. Masks are written as compressed RLE, boxes as ``[x, y, w, h]``.
    """
    json_path = Path(json_path)
    root = Path(images_dir) if images_dir is not None else json_path.parent
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, record in enumerate(data.records):
        if isinstance(record.source, np.ndarray):
            image = Image.fromarray(record.source)
        else:
            image = load_image(record.source, "RGB")
        name = f"{index:06d}.png"
        image.save(root / name)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        for k, (box, label) in enumerate(zip(record.boxes, record.labels)):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": data.category_ids[int(label)],
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if record.masks is not None:
                ann["segmentation"] = mask_to_rle(record.masks[k])
                ann["area"] = float(record.masks[k].sum())
            annotations.append(ann)
    categories = [{"id": cid, "name": name} for cid, name in zip(data.category_ids, data.classes)]
    text = json.dumps({"images": images, "annotations": annotations, "categories": categories}) + "\n"
    return atomic_write_bytes(json_path, text.encode("utf-8"))
