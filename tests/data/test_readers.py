"""Class folders, manifests, unreadable files and train/val splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.data.readers import ClassificationData, ImageSample, read_class_folder
from omnivis.data.splits import split_indices
from omnivis.errors import DataError, SkippedInputWarning


def _image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)
    return path


@pytest.fixture
def class_root(tmp_path: Path) -> Path:
    root = tmp_path / "animals"
    _image(root / "dog" / "b.png")
    _image(root / "dog" / "a.JPG")
    _image(root / "dog" / "nested" / "c.bmp")
    _image(root / "cat" / "x.webp")
    _image(root / "cat" / "y.tiff")
    _image(root / "cat" / ".hidden.png")
    _image(root / ".cache" / "z.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_class_folders(class_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_class_folder(class_root)
    assert data.classes == ["cat", "dog"]
    names = [s.name for s in data.samples]
    assert names == ["cat/x.webp", "cat/y.tiff", "dog/a.JPG", "dog/b.png", "dog/nested/c.bmp"]
    np.testing.assert_array_equal(data.labels(), [0, 0, 1, 1, 1])
    assert data.labels().dtype == np.int64
    assert all(isinstance(s.source, Path) and s.source.is_file() for s in data.samples)
    assert data.source == str(class_root) and data.skipped == []
    assert len(data) == 5


def test_subset_keeps_classes(class_root):
    data = read_class_folder(class_root)
    part = data.subset(np.array([4, 0]))
    assert part.classes == data.classes
    assert [s.name for s in part.samples] == ["dog/nested/c.bmp", "cat/x.webp"]
    np.testing.assert_array_equal(part.labels(), [1, 0])


def test_corrupt_file_skipped_with_one_warning(class_root):
    (class_root / "dog" / "broken.jpg").write_bytes(b"garbage")
    (class_root / "cat" / "empty.png").write_bytes(b"")
    with pytest.warns(SkippedInputWarning) as record:
        data = read_class_folder(class_root)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"{class_root}: skipped 2 unreadable images: ")
    assert "dog/broken.jpg (cannot identify image file)" in message
    assert len(data) == 5
    assert [name for name, _ in data.skipped] == ["cat/empty.png", "dog/broken.jpg"]


def test_strict_mode_raises_on_first_bad_file(class_root):
    (class_root / "dog" / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot identify image file"):
        read_class_folder(class_root, strict=True)


def test_given_classes_fix_the_labels_and_reject_unknown(class_root):
    data = read_class_folder(class_root, classes=["bird", "dog", "cat"])
    assert data.classes == ["bird", "dog", "cat"]
    np.testing.assert_array_equal(data.labels(), [2, 2, 1, 1, 1])
    with pytest.raises(DataError, match=r"unknown class 'dog'.*known classes are: cat, bird"):
        read_class_folder(class_root, classes=["cat", "bird"])


def test_unlabeled_folder(tmp_path):
    _image(tmp_path / "b.png")
    _image(tmp_path / "a.jpeg")
    (tmp_path / "empty-subfolder").mkdir()
    data = read_class_folder(tmp_path)
    assert data.classes == []
    assert [s.name for s in data.samples] == ["a.jpeg", "b.png"]
    np.testing.assert_array_equal(data.labels(), [-1, -1])


def test_empty_class_folder_and_loose_images_are_reported(class_root):
    (class_root / "bird").mkdir()
    _image(class_root / "loose.png")
    with pytest.warns(UserWarning) as record:
        data = read_class_folder(class_root)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "ignored 1 class folder(s) with no images" in messages[0] and messages[0].endswith(": bird")
    assert "ignored 1 image(s) directly in" in messages[1]
    assert data.classes == ["cat", "dog"] and len(data) == 5


def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nope: dataset folder not found"):
        read_class_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        read_class_folder(tmp_path / "empty")
    _image(tmp_path / "file.png")
    with pytest.raises(DataError, match="not a folder"):
        read_class_folder(tmp_path / "file.png")


def test_manifest(tmp_path):
    _image(tmp_path / "imgs" / "1.png")
    _image(tmp_path / "imgs" / "2.png")
    absolute = _image(tmp_path / "elsewhere" / "3.png")
    manifest = tmp_path / "train.csv"
    manifest.write_text(f"path,label\nimgs/1.png,zebra\nimgs/2.png,ant\n{absolute},zebra\n\n")
    data = read_class_folder(tmp_path, manifest=manifest)
    assert data.classes == ["ant", "zebra"]
    np.testing.assert_array_equal(data.labels(), [1, 0, 1])
    assert data.samples[0].source == tmp_path / "imgs" / "1.png"
    # a .csv given as the dataset itself, and a manifest named relative to the root
    assert read_class_folder(manifest).classes == ["ant", "zebra"]
    assert len(read_class_folder(tmp_path, manifest="train.csv")) == 3


def test_manifest_missing_file(tmp_path):
    _image(tmp_path / "1.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n1.png,a\ngone.png,b\n")
    with pytest.warns(SkippedInputWarning, match=r"m\.csv: skipped 1 unreadable image: gone\.png \(line 3: file not found\)"):
        data = read_class_folder(tmp_path, manifest=manifest)
    assert data.classes == ["a", "b"] and len(data) == 1
    assert data.skipped == [("gone.png", "line 3: file not found")]
    with pytest.raises(DataError, match=r"m\.csv:3: file not found: gone\.png"):
        read_class_folder(tmp_path, manifest=manifest, strict=True)


def test_manifest_bad_header_and_unknown_label(tmp_path):
    _image(tmp_path / "1.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\n1.png,a\n")
    with pytest.raises(DataError, match=r"m\.csv: expected the header 'path,label', found 'file,class'"):
        read_class_folder(tmp_path, manifest=manifest)
    manifest.write_text("path,label\n1.png,a\n")
    with pytest.raises(DataError, match=r"m\.csv:2: unknown class 'a'; the known classes are: b, c"):
        read_class_folder(tmp_path, manifest=manifest, classes=["b", "c"])


def test_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, val = split_indices(labels, 0.2, seed=7)
    again_train, again_val = split_indices(labels, 0.2, seed=7)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.bincount(labels[val]), [10, 6, 4])
    other_train, other_val = split_indices(labels, 0.2, seed=8)
    assert not np.array_equal(val, other_val)


def test_split_ignores_global_random_state():
    labels = np.arange(40) % 4
    np.random.seed(1)
    first = split_indices(labels, 0.25, seed=3)
    np.random.seed(2)
    np.random.rand(10)
    second = split_indices(labels, 0.25, seed=3)
    np.testing.assert_array_equal(first[1], second[1])


def test_split_falls_back_without_stratification():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])  # class 1 has a single member
    train, val = split_indices(labels, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7
    plain_train, plain_val = split_indices(labels, 0.3, seed=0, stratify=False)
    np.testing.assert_array_equal(val, plain_val)


def test_split_edge_cases():
    train, val = split_indices(np.zeros(5, np.int64), 0.0)
    np.testing.assert_array_equal(train, np.arange(5))
    assert val.size == 0 and val.dtype == np.int64
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            split_indices(np.zeros(5, np.int64), bad)
    train, val = split_indices(np.array([0, 1]), 0.01)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(DataError):
        split_indices(np.array([0]), 0.5)


def test_in_memory_samples_are_supported():
    samples = [ImageSample(np.full((2, 2), i, np.uint8), i, f"mem/{i}") for i in range(2)]
    data = ClassificationData(samples, ["a", "b"], "memory")
    assert data.subset([1]).samples[0].name == "mem/1"
