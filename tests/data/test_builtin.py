"""Built-in datasets: sizes, dtypes, determinism of generated shapes, and name resolution."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omnivis.data.builtin import (
    BUILTIN_DATASETS,
    PHOTO_NAMES,
    SHAPE_CLASSES,
    list_builtin,
    load_builtin,
    make_shapes,
    resolve_classification_data,
)
from omnivis.data.images import array_to_image
from omnivis.errors import DataError


def _assert_uint8_images(data) -> None:
    for sample in data.samples:
        assert isinstance(sample.source, np.ndarray) and sample.source.dtype == np.uint8
        assert sample.source.ndim == 2 or (sample.source.ndim == 3 and sample.source.shape[2] == 3)
        assert 0 <= sample.label < len(data.classes)


def test_digits():
    data = load_builtin("digits")
    assert len(data) == 1797
    assert data.classes == [str(d) for d in range(10)]
    assert data.source == "builtin:digits"
    assert data.samples[0].name == "digits/0000" and data.samples[-1].name == "digits/1796"
    stack = np.stack([s.source for s in data.samples])
    assert stack.shape == (1797, 8, 8) and stack.dtype == np.uint8
    assert stack.min() == 0 and stack.max() == 255
    assert set(np.unique(stack)) <= {round(v * 255 / 16) for v in range(17)}
    np.testing.assert_array_equal(np.bincount(data.labels()) > 170, True)
    assert len(load_builtin("digits", n=10)) == 10


def test_faces():
    data = load_builtin("faces")
    assert len(data) == 200 and data.classes == ["face", "non-face"]
    np.testing.assert_array_equal(data.labels(), [0] * 100 + [1] * 100)
    assert data.samples[0].source.shape == (25, 25)
    _assert_uint8_images(data)


def test_photos_load_offline():
    data = load_builtin("photos")
    assert data.classes == list(PHOTO_NAMES) and len(data) == len(PHOTO_NAMES)
    np.testing.assert_array_equal(data.labels(), np.arange(len(PHOTO_NAMES)))
    _assert_uint8_images(data)
    horse = data.samples[PHOTO_NAMES.index("horse")].source
    assert set(np.unique(horse)) == {0, 255}
    assert array_to_image(data.samples[PHOTO_NAMES.index("astronaut")].source).size == (512, 512)


def test_shapes_deterministic_and_prefix_consistent():
    first = make_shapes(12, img_size=32, seed=3)
    again = make_shapes(12, img_size=32, seed=3)
    longer = make_shapes(20, img_size=32, seed=3)
    for a, b, c in zip(first.scenes, again.scenes, longer.scenes):
        for field in ("image", "labels", "boxes", "masks"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_array_equal(getattr(a, field), getattr(c, field))
    other = make_shapes(12, img_size=32, seed=4)
    assert not np.array_equal(first.scenes[0].image, other.scenes[0].image)
    assert first.classes == SHAPE_CLASSES


@pytest.mark.parametrize("img_size", [16, 64])
def test_shapes_annotations(img_size):
    data = make_shapes(40, img_size=img_size, seed=0)
    seen = set()
    for scene in data.scenes:
        count = len(scene.labels)
        assert count >= 1
        assert scene.image.shape == (img_size, img_size, 3) and scene.image.dtype == np.uint8
        assert scene.labels.dtype == np.int64 and scene.boxes.dtype == np.float32
        assert scene.boxes.shape == (count, 4) and scene.masks.shape == (count, img_size, img_size)
        assert scene.masks.dtype == bool
        assert np.all((scene.labels >= 0) & (scene.labels < len(SHAPE_CLASSES)))
        seen.update(scene.labels.tolist())
        assert not np.any(scene.masks.sum(axis=0) > 1), "visible masks must not overlap"
        for mask, box in zip(scene.masks, scene.boxes):
            assert mask.any()
            if count > 1:
                assert mask.sum() >= 20
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert seen == {0, 1, 2}


def test_shapes_objects_have_distinct_colour():
    scene = make_shapes(1, img_size=64, seed=5).scenes[0]
    image = scene.image.astype(np.float64)
    background = ~scene.masks.any(axis=0)
    for mask in scene.masks:
        inside = image[mask].mean(axis=0)
        assert np.linalg.norm(inside - image[background].mean(axis=0)) > 40


def test_shapes_classification_loader():
    data = load_builtin("shapes", n=30, img_size=32, seed=1)
    assert len(data) == 30 and data.classes == list(SHAPE_CLASSES) and data.source == "builtin:shapes"
    scenes = make_shapes(30, img_size=32, seed=1).scenes
    for sample, scene in zip(data.samples, scenes):
        np.testing.assert_array_equal(sample.source, scene.image)
        assert sample.label == scene.labels[np.argmax(scene.masks.sum(axis=(1, 2)))]
    assert len(load_builtin("shapes")) == 600


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="img_size"):
        make_shapes(1, img_size=8)
    with pytest.raises(ValueError, match="min_objects"):
        make_shapes(1, min_objects=3, max_objects=2)


def test_unknown_name_suggests_close_match():
    with pytest.raises(DataError, match=r"unknown built-in dataset 'digit'; did you mean 'digits'\?.*faces"):
        load_builtin("digit")
    with pytest.raises(ValueError, match=r"builtin:faces does not take n"):
        load_builtin("faces", n=3)


def test_table_and_listing():
    assert [d.name for d in list_builtin()] == list(BUILTIN_DATASETS)
    assert {"digits", "photos", "faces", "shapes"} <= set(BUILTIN_DATASETS)
    for name, entry in BUILTIN_DATASETS.items():
        assert entry.name == name and entry.description and entry.tasks


def test_resolve_builtin_folder_and_bad_scheme(tmp_path):
    assert len(resolve_classification_data("builtin:faces")) == 200
    remapped = resolve_classification_data("builtin:faces", classes=["x", "non-face", "face"])
    assert remapped.labels()[0] == 2 and remapped.labels()[-1] == 1
    with pytest.raises(DataError, match="unknown class 'face'"):
        resolve_classification_data("builtin:faces", classes=["non-face"])
    (tmp_path / "a").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "a" / "1.png")
    assert resolve_classification_data(str(tmp_path)).classes == ["a"]
    with pytest.raises(DataError, match=r"unknown data scheme 'hf:'"):
        resolve_classification_data("hf:cifar10")
    with pytest.raises(DataError, match="unknown torchvision dataset 'CIFAR11'; did you mean 'CIFAR10'"):
        resolve_classification_data("torchvision:CIFAR11")
