"""Detection data: the COCO reader (good and bad records), builtin:shapes splits, aligned augmentation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from omnivis.data.coco import read_coco
from omnivis.data.detection import (
    DetectionDataset,
    build_detection_transform,
    coco_results,
    detection_collate,
    resolve_detection_data,
    shapes_detection_data,
    write_coco_results,
)
from omnivis.data.detection_records import rle_to_mask
from omnivis.errors import DataError, SkippedInputWarning


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path, bad: dict | None = None) -> Path:
    """Two 40x30 images; annotations: a polygon, an RLE and (optionally) one bad record."""
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(root / name)
    square = np.zeros((30, 40), bool)
    square[5:15, 20:32] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8],
         "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "area": 80, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 9, "bbox": [20, 5, 12, 10], "segmentation": _rle(square),
         "area": 120, "iscrowd": 0},
    ]
    if bad:
        anns.append({"id": 17, "image_id": 1, "category_id": 7, "iscrowd": 0, **bad})
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
        "annotations": anns,
        "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco_polygon_and_rle(tmp_path):
    data = read_coco(write_coco(tmp_path))
    assert data.classes == ["cat", "dog"] and data.category_ids == [7, 9]  # sorted by category id
    a, b = data.records
    assert a.labels.tolist() == [0] and b.labels.tolist() == [1]
    np.testing.assert_allclose(a.boxes, [[2, 3, 12, 11]])
    assert data.has_masks and a.masks.shape == (1, 30, 40)
    ys, xs = np.nonzero(b.masks[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (20, 5, 32, 15)  # the RLE decoded in place
    assert a.masks[0, 5:10, 4:10].all()  # inside the polygon


BAD = [
    ({"bbox": [5, 5, -3, 4]}, "box has negative width"),
    ({"bbox": [5, 5, 4, 0]}, "box has zero height"),
    ({"bbox": [100, 100, 5, 5]}, "lies outside"),
    ({"bbox": [5, 5, 4, 4], "category_id": 3}, "unknown category id 3"),
    ({"bbox": [5, 5, 4, 4], "image_id": 99}, "points to image id 99"),
    ({"bbox": [5, 5, 4, 4], "segmentation": {"size": [10, 10], "counts": "0"}}, "mask is 10x10 but the image is 30x40"),
]


@pytest.mark.parametrize("bad, message", BAD)
def test_bad_record_is_skipped_with_one_warning_or_raises_when_strict(tmp_path, bad, message):
    path = write_coco(tmp_path, bad)
    with pytest.warns(SkippedInputWarning, match="ann.json: skipped 1 bad record: ann.json annotation id 17") as caught:
        data = read_coco(path)
    ours = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(ours) == 1 and message in str(ours[0].message)
    assert len(data.skipped) == 1 and sum(len(r.labels) for r in data.records) == 2
    name, reason = data.skipped[0]
    assert name == "ann.json annotation id 17" and message in reason
    with pytest.raises(DataError, match=message):
        read_coco(path, strict=True)


def test_box_partly_outside_is_clipped(tmp_path):
    path = write_coco(tmp_path, {"bbox": [30, 20, 20, 20]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_coco(path)
    assert data.records[0].boxes[-1].tolist() == [30, 20, 40, 30]
    assert not data.has_masks  # one annotation without a segmentation: boxes only


def test_missing_file_and_not_coco(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_coco(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO"):
        read_coco(tmp_path / "x.json")


def test_shapes_splits_come_from_different_seeds():
    train = resolve_detection_data("builtin:shapes", split="train", num_train=5, num_test=4, img_size=48)
    test = resolve_detection_data("builtin:shapes", split="test", num_train=5, num_test=4, img_size=48)
    assert len(train.records) == 5 and len(test.records) == 4
    assert not np.array_equal(train.records[0].source, test.records[0].source)
    assert train.records[0].source.shape == (48, 48, 3) and train.has_masks
    with pytest.raises(DataError, match="COCO"):
        resolve_detection_data("builtin:digits")


def test_augmentation_keeps_boxes_and_masks_aligned():
    data = shapes_detection_data(12, 64, seed=3)
    dataset = DetectionDataset(data, build_detection_transform(64, train=True, scale_min=0.5), seed=0, masks=True)
    checked = 0
    for epoch in range(3):
        for index in range(len(data.records)):
            image, target = dataset[(epoch, index)]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
            boxes, masks = target["boxes"], target["masks"]
            assert len(boxes) == len(masks) == len(target["labels"])
            for box, mask in zip(boxes, masks):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                if len(xs) < 20:
                    continue  # a sliver at the crop's edge; its box may be rounded differently
                tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                assert torch.allclose(box, tight, atol=2.0), (box, tight)
                checked += 1
    assert checked > 40
    again = dataset[(1, 4)]
    image, target = dataset[(1, 4)]
    assert torch.equal(again[0], image) and torch.equal(again[1]["boxes"], target["boxes"])  # seeded by (epoch, index)


def test_eval_transform_is_resize_only_and_collate_keeps_lists():
    data = shapes_detection_data(2, 32, seed=0)
    dataset = DetectionDataset(data, build_detection_transform(64, train=False))
    image, target = dataset[0]
    assert image.shape == (3, 64, 64)
    assert torch.allclose(target["boxes"], torch.as_tensor(data.records[0].boxes) * 2)
    images, targets = detection_collate([dataset[0], dataset[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(targets) == 2


def test_coco_results_round_trip(tmp_path):
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    preds = [{"image_id": 4, "boxes": [[3, 2, 7, 5]], "scores": [0.9], "category_ids": [7], "masks": [mask]}]
    path = write_coco_results(preds, tmp_path / "r.json")
    [entry] = json.loads(path.read_text())
    assert entry["bbox"] == [3, 2, 4, 3] and entry["category_id"] == 7 and entry["image_id"] == 4
    assert np.array_equal(rle_to_mask(entry["segmentation"]), mask)
    assert "segmentation" not in coco_results([{**preds[0], "masks": None}])[0]


def test_write_coco_round_trips_shapes(tmp_path):
    from omnivis.data.coco import write_coco

    data = shapes_detection_data(3, 32, seed=2)
    back = read_coco(write_coco(data, tmp_path / "coco" / "ann.json"))
    assert back.classes == data.classes and back.category_ids == [1, 2, 3]
    for a, b in zip(data.records, back.records):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.masks, b.masks)
