"""Detection records: what every detection reader returns and every detection consumer reads.

A ``DetectionData`` is a list of records (image, boxes, labels, optional instance masks) plus the
class names, the COCO category ids and what its reader skipped. Readers (``omnivis.data.coco``,
the shapes scenes in ``omnivis.data.detection``) build it; the dataset, the tasks and the COCO
writers consume it. This module imports no reader, so imports between them go one way:
``detection_records`` <- ``coco`` <- ``detection``. The COCO RLE codec is here too, since both the
COCO writer and the results writer encode masks with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from omnivis.data.skipped import Skipped


@dataclass
class DetectionRecord:
    """One annotated image.

    Attributes:
        source: an image path or an H x W x 3 uint8 array.
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the original image.
        labels: (N,) int64 class indices into ``DetectionData.classes``.
        masks: (N, H, W) bool instance masks, or None when the data has no masks.
        name: how errors and reports name the image.
        image_id: the COCO image id (the index for built-in data).
        crowd_masks, crowd_labels: (K, H, W) bool and (K,) int64: COCO crowd regions (``iscrowd:
            1``), which detection leaves out but a semantic mask paints with their class; read only
            with ``read_coco(per_image_masks=True)``, else None.
    """

    source: str | Path | np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    name: str = ""
    image_id: int = 0
    crowd_masks: np.ndarray | None = None
    crowd_labels: np.ndarray | None = None


@dataclass
class DetectionData:
    """Records, class names (index order) and, per class, the COCO category id written to results.

    ``skipped`` holds ``(record, reason)`` for every bad record the reader left out, e.g.
    ``("ann.json annotation id 17", "image 'a.jpg': box has negative width")`` (see
    ``omnivis.data.skipped``); ``subset`` keeps it whole, since it describes the file read.
    """

    records: list[DetectionRecord]
    classes: list[str]
    source: str
    category_ids: list[int] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.classes) + 1))

    @property
    def has_masks(self) -> bool:
        return bool(self.records) and all(r.masks is not None for r in self.records)

    def subset(self, indices: Sequence[int]) -> DetectionData:
        return replace(self, records=[self.records[int(i)] for i in indices], skipped=list(self.skipped))


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (counts str or bytes) -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return mask_utils.decode(encoded).astype(bool)
