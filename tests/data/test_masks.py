"""Mask-folder reader, builtin:shapes as segmentation data, and mask-aware augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.builtin import make_shapes
from omnivis.data.masks import (
    MaskAugment,
    SegmentationDataset,
    build_mask_transform,
    load_shapes_segmentation,
    read_mask_folder,
    shapes_class_map,
)
from omnivis.errors import DataError, SkippedInputWarning


def _write_pair(root, name, mask, palette=False, image_size=None, ext=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = image_size or mask.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "images" / f"{name}{ext}")
    im = Image.fromarray(mask.astype(np.uint8), mode="P" if palette else "L")
    if palette:  # colours are for people; the pixel values stay the class indices
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    im.save(root / "masks" / f"{name}.png")


def _mask(value=1):
    mask = np.zeros((8, 10), np.uint8)
    mask[2:5, 3:7] = value
    mask[0, 0] = 255  # ignore
    return mask


def test_palette_and_index_masks_read_the_same_indices(tmp_path):
    _write_pair(tmp_path, "a", _mask(1), palette=True)
    _write_pair(tmp_path, "b", _mask(2), palette=False, ext=".jpg")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    data = read_mask_folder(tmp_path)
    assert data.classes == ["background", "cat", "dog"]
    assert [s.name for s in data.samples] == ["a", "b"]
    with Image.open(data.samples[0].mask) as im:
        assert im.mode == "P"
    from omnivis.data.masks import read_mask

    assert np.array_equal(read_mask(data.samples[0].mask), _mask(1))
    assert np.array_equal(read_mask(data.samples[1].mask), _mask(2))


def test_classes_inferred_without_classes_txt(tmp_path):
    _write_pair(tmp_path, "a", _mask(3))
    assert read_mask_folder(tmp_path).classes == ["0", "1", "2", "3"]  # 255 is ignore, not a class


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no mask"),
        ("size", "mask is 10x8 but its image is 12x8"),
        ("index", "class index 5 but classes.txt lists 3 classes"),
    ],
)
def test_bad_pairs_are_skipped_with_one_warning_or_raise_with_strict(tmp_path, case, expected):
    _write_pair(tmp_path, "good", _mask(1))
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    if case == "missing":
        _write_pair(tmp_path, "bad", _mask(1))
        (tmp_path / "masks" / "bad.png").unlink()
    elif case == "size":
        _write_pair(tmp_path, "bad", _mask(1), image_size=(8, 12))
    else:
        _write_pair(tmp_path, "bad", _mask(5))
    with pytest.warns(SkippedInputWarning, match="skipped 1 image/mask pair: ") as record:
        data = read_mask_folder(tmp_path)
    assert len(record) == 1 and "bad" in str(record[0].message) and expected in str(record[0].message)
    assert [s.name for s in data.samples] == ["good"]
    at_fault = "images/bad.png" if case == "missing" else "masks/bad.png"
    assert len(data.skipped) == 1 and data.skipped[0][0] == at_fault and expected in data.skipped[0][1]
    with pytest.raises(DataError, match=expected):
        read_mask_folder(tmp_path, strict=True)


def test_rgb_mask_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="images/ and masks/"):
        read_mask_folder(tmp_path)
    _write_pair(tmp_path, "a", _mask(1))
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="mask mode is RGB"):
        read_mask_folder(tmp_path)


def test_shapes_class_map_paints_later_objects_on_top():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    masks[1, 1:3, 1:3] = True
    out = shapes_class_map(masks, np.array([2, 0]))
    assert out[0, 0] == 3 and out[1, 1] == 1 and out[2, 2] == 1 and out[3, 3] == 0


def test_builtin_shapes_train_and_val_seeds_differ():
    train = load_shapes_segmentation(4, 32, seed=0)
    val = load_shapes_segmentation(4, 32, seed=1)
    assert train.classes == ["background", "circle", "square", "triangle"]
    assert not np.array_equal(train.samples[0].image, val.samples[0].image)
    scene = make_shapes(1, 32, 0).scenes[0]
    assert set(np.unique(train.samples[0].mask)) == {0, *(int(l) + 1 for l in scene.labels)}


def test_augmentation_keeps_mask_aligned_and_is_seeded():
    # an image whose pixel colour encodes its class: after any crop/flip/resize the mask must still
    # label each pixel with the class its colour says (colour jitter off for the check)
    data = load_shapes_segmentation(6, 64, seed=3)
    for sample in data.samples:
        sample.image = np.stack([sample.mask * 60] * 3, axis=-1).astype(np.uint8)
    tf = build_mask_transform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), MaskAugment(hflip=True, scale_min=0.3, color_jitter=0.0))
    dataset = SegmentationDataset(data, tf, "RGB", seed=0)
    for index in range(6):
        image, mask = dataset[(2, index)]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64
        from_colour = torch.round(image[0] * 255 / 60).long()
        # bilinear resizing blurs colour edges; away from edges colour and mask must agree
        agree = (from_colour == mask).float().mean()
        assert agree > 0.9
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3}  # nearest neighbour: no mixed labels
        again_image, again_mask = dataset[(2, index)]
        assert torch.equal(again_image, image) and torch.equal(again_mask, mask)
    differ = [not torch.equal(dataset[(e, 0)][1], dataset[(0, 0)][1]) for e in range(1, 5)]
    assert any(differ)  # another epoch draws another crop
