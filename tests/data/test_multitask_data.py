"""COCO file + labels CSV -> multi-task data (boxes, class masks, image classes), bad records and the dataset."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from omnivis.data.masks import MaskAugment, build_mask_transform
from omnivis.data.multitask import (
    MultitaskDataset,
    align_classes,
    load_coco_multitask,
    multitask_collate,
    write_shapes_coco,
)
from omnivis.errors import DataError, ImageError, SkippedInputWarning

TF = build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, None)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_dataset(root: Path) -> tuple[Path, Path, Path]:
    """Three 40x30 images in root/img: a.png two overlapping instances (polygon, then RLE); b.png
    none; c.png one box without a segmentation. labels.csv lists a, c and an image not in the file."""
    images = root / "img"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(images / name)
    square = np.zeros((30, 40), bool)
    square[5:15, 8:20] = True  # overlaps the polygon [2, 3]-[12, 11]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8],
         "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "area": 80, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [8, 5, 12, 10], "segmentation": _rle(square),
         "area": 120, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 9, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
    ]
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(("a.png", "b.png", "c.png"))],
        "annotations": anns,
        "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],
    }
    ann = root / "ann.json"
    ann.write_text(json.dumps(data))
    csv = root / "labels.csv"
    csv.write_text(f"path,label\na.png,outdoor\n{images / 'c.png'},indoor\nzzz.png,indoor\n")
    return ann, images, csv


def test_coco_and_csv_give_boxes_class_masks_and_image_labels(tmp_path):
    ann, images, csv = write_dataset(tmp_path)
    with pytest.warns(SkippedInputWarning, match="labels.csv: skipped 1 bad row: labels.csv line 4 \\('zzz.png' is not an image of the COCO file\\)"):
        data = load_coco_multitask(ann, images, csv)
    assert data.det_classes == ["cat", "dog"] and data.classes == ["indoor", "outdoor"]  # COCO ids 7, 9; CSV sorted
    assert data.images == [images / "a.png", images / "b.png", images / "c.png"]  # paths, not pixels
    assert data.labels == [1, -1, 0]  # b is not in the CSV: no class label
    assert data.skipped == [("labels.csv line 4", "'zzz.png' is not an image of the COCO file")]
    a, b, c = data.masks
    assert a.shape == (30, 40) and a[4, 3] == 1 and a[12, 18] == 2  # cat = 1, dog = 2, background 0
    assert a[6, 10] == 2  # the overlap: the later annotation (the dog) is painted over the cat
    assert a[25, 35] == 0
    assert b is not None and not b.any()  # no annotations: all background, which is a label
    assert c is None  # an annotation without segmentation: no mask for that image
    assert data.boxes[1].shape == (0, 4) and data.box_labels[1].shape == (0,)  # empty boxes, still a target
    assert data.box_labels[0].tolist() == [0, 1] and data.boxes[2].tolist() == [[1, 1, 6, 6]]
    with pytest.raises(DataError, match=r"labels.csv:4: 'zzz.png' is not an image of the COCO file"):
        load_coco_multitask(ann, images, csv, strict=True)
    csv.write_text("path,label\na.png,x\na.png,y\n")
    with pytest.warns(UserWarning, match="listed twice"):
        assert load_coco_multitask(ann, images, csv).labels == [0, -1, -1]


def test_dataset_loads_files_and_handles_missing_mask_and_empty_boxes(tmp_path):
    ann, images, csv = write_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_coco_multitask(ann, images, csv)
    augment = MaskAugment(hflip=True, scale_min=0.7, color_jitter=0.2)
    train = MultitaskDataset(data, build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, augment), seed=3)
    items = [train[(1, i)] for i in range(3)]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(items, [train[(1, i)] for i in range(3)]))  # seeded
    image, mask, label, target = items[1]
    assert image.shape == (3, 32, 32) and (mask == 0).all() and label == -1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    image, mask, label, target = MultitaskDataset(data, TF)[2]
    assert (mask == 255).all() and label == 0 and target["boxes"].shape == (1, 4)  # no mask: every pixel ignored
    images_t, masks_t, labels_t, targets = multitask_collate(items)
    assert images_t.shape == (3, 3, 32, 32) and labels_t.tolist() == [1, -1, 0] and len(targets) == 3
    # a file that stopped being an image after reading: load_image's one line names it
    (images / "a.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="a.png"):
        MultitaskDataset(data, TF)[0]


def test_unreadable_images_are_skipped_and_counted_or_strict(tmp_path):
    ann, images, csv = write_dataset(tmp_path)
    (images / "b.png").write_bytes(b"\x89PNG truncated")
    with pytest.warns(SkippedInputWarning, match=r"ann.json: skipped 1 unreadable image: b.png \("):
        data = load_coco_multitask(ann, images)
    assert [p.name for p in data.images] == ["a.png", "c.png"]
    assert [name for name, _ in data.skipped] == ["b.png"] and data.skipped[0][1]
    assert data.classes == [] and data.labels == [-1, -1]  # no CSV: no class labels
    with pytest.raises(DataError, match="b.png"):
        load_coco_multitask(ann, images, strict=True)


def test_bad_inputs_are_one_clear_line(tmp_path):
    ann, images, csv = write_dataset(tmp_path)
    with pytest.raises(DataError, match="nowhere: images folder not found"):
        load_coco_multitask(ann, tmp_path / "nowhere")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        load_coco_multitask(broken, images)
    with pytest.raises(DataError, match="missing.csv: labels CSV not found"):
        load_coco_multitask(ann, images, tmp_path / "missing.csv")
    csv.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="expected the header 'path,label'"):
        load_coco_multitask(ann, images, csv)
    csv.write_text("path,label\nzzz.png,x\n")
    with pytest.raises(DataError, match="no row names an image of the COCO file"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_coco_multitask(ann, images, csv)


def test_align_classes_relabels_another_file_into_the_models_order(tmp_path):
    ann, images, csv = write_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_coco_multitask(ann, images, csv)
    aligned = align_classes(data, ["outdoor", "indoor"], ["dog", "cat", "bird"])
    assert aligned.labels == [0, -1, 1] and aligned.box_labels[0].tolist() == [1, 0]
    assert aligned.masks[0][4, 3] == 2 and aligned.masks[0][12, 18] == 1 and aligned.masks[0][25, 35] == 0
    with pytest.raises(DataError, match="object class 'cat' is not one of the model's"):
        align_classes(data, data.classes, ["dog"])


def test_write_shapes_coco_round_trips(tmp_path):
    ann = write_shapes_coco(tmp_path / "shapes", n=8, img_size=32, seed=0)
    data = load_coco_multitask(ann, labels_csv=tmp_path / "shapes" / "labels.csv")
    from omnivis.data.multitask import load_shapes_multitask

    ref = load_shapes_multitask(8, 32, seed=0)  # all three shapes are among the labels
    assert data.labels == ref.labels and data.classes == ref.classes and data.det_classes == ref.det_classes
    assert all(np.array_equal(a, b) for a, b in zip(data.masks, ref.masks))
    assert all(np.allclose(a, b) for a, b in zip(data.boxes, ref.boxes))
    assert np.array_equal(np.asarray(data.image(0)), ref.images[0])


def test_crowd_regions_are_painted_under_the_instances_but_give_no_box(tmp_path):
    ann, images, _ = write_dataset(tmp_path)
    data = json.loads(ann.read_text())
    crowd = np.zeros((30, 40), bool)
    crowd[20:28, 0:30] = True  # a crowd of cats along the bottom
    crowd[12:16, 8:12] = True  # and a patch under the dog's square (rows 5-14), where the dog must win
    data["annotations"].insert(0, {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 12, 30, 16],
                                   "segmentation": _rle(crowd), "area": int(crowd.sum()), "iscrowd": 1})
    data["annotations"].append({"id": 5, "image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5],
                                "segmentation": _rle(np.ones((30, 40), bool)), "area": 1200, "iscrowd": 1})
    ann.write_text(json.dumps(data))
    loaded = load_coco_multitask(ann, images)
    a, b, _ = loaded.masks
    assert a[24, 15] == 1 and a[13, 9] == 2 and a[17, 35] == 0  # crowd cat; the dog over the crowd; background
    assert loaded.box_labels[0].tolist() == [0, 1] and len(loaded.boxes[1]) == 0  # crowds give no boxes
    assert (b == 2).all()  # an image whose only annotation is a crowd of dogs
