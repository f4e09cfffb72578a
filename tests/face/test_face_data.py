"""Face data: the ORL built-in, identity splits, pairs drawn and read from LFW's pairs.txt."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omnivis.data.builtin import load_builtin
from omnivis.data.faces import (
    all_pairs,
    balanced_pairs,
    identity_split,
    parse_identities,
    read_pairs,
)
from omnivis.errors import DataError


def test_orl_faces_are_the_published_set_with_the_documented_split():
    data = load_builtin("builtin:orl-faces")
    assert len(data) == 400 and data.classes == [f"s{i}" for i in range(1, 41)]
    assert np.bincount(data.labels()).tolist() == [10] * 40
    assert all(str(s.source).endswith(".pgm") for s in data.samples)
    with Image.open(data.samples[0].source) as photo:
        assert photo.size == (92, 112) and photo.mode == "L"
    train, test, held = identity_split(data, None, 0.25, seed=0)
    assert held == [f"s{i}" for i in range(31, 41)]
    assert set(data.labels()[train]).isdisjoint(set(data.labels()[test]))
    pairs = all_pairs(data.labels()[test])
    assert (int(pairs.same.sum()), int((~pairs.same).sum())) == (450, 4500)  # the protocol


def test_identity_split_by_fraction_is_seeded_and_whole_people():
    labels = np.repeat(np.arange(10), 3)
    from omnivis.data.readers import ClassificationData, ImageSample

    data = ClassificationData([ImageSample(np.zeros((4, 4), np.uint8), int(y), str(i)) for i, y in enumerate(labels)],
                              [f"n{i}" for i in range(10)], "mem")
    a = identity_split(data, None, 0.3, seed=5)
    b = identity_split(data, None, 0.3, seed=5)
    assert a[2] == b[2] and len(a[2]) == 3
    assert not set(labels[a[0]]) & set(labels[a[1]])
    with pytest.raises(DataError, match="'nobody' is not a person"):
        identity_split(data, ["nobody"], 0.3, seed=0)
    with pytest.raises(DataError, match="hold out at least 2 people"):
        identity_split(data, ["n3"], 0.3, seed=0)


def test_parse_identities_ranges():
    assert parse_identities("s3-s5,bob") == ["s3", "s4", "s5", "bob"]
    assert parse_identities("p08-p10") == ["p08", "p09", "p10"]
    assert parse_identities(None) is None


def test_balanced_pairs_are_balanced_per_fold():
    labels = np.repeat(np.arange(20), 5)
    pairs = balanced_pairs(labels, per_fold=10, folds=10, seed=0)
    assert int(pairs.same.sum()) == 100 and int((~pairs.same).sum()) == 100
    for fold in range(10):
        assert int(pairs.same[pairs.fold == fold].sum()) == 10
    assert np.all(pairs.first != pairs.second)
    assert np.all(pairs.same == (labels[pairs.first] == labels[pairs.second]))
    assert len({(a, b) for a, b in zip(pairs.first.tolist(), pairs.second.tolist())}) == 200  # no repeats


def _lfw_folder(root):
    for name, count in (("Ann_Lee", 2), ("Bo_Chan", 1)):
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            Image.fromarray(np.full((8, 8), 40 * n, np.uint8)).save(root / name / f"{name}_{n:04d}.jpg")
    return root


def test_read_pairs_in_lfw_format(tmp_path):
    root = _lfw_folder(tmp_path / "lfw")
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Chan\t1\n")
    images, pairs = read_pairs(pairs_file, root)
    assert [p.name for p in images] == ["Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", "Bo_Chan_0001.jpg"]
    assert pairs.same.tolist() == [True, False] and pairs.fold.tolist() == [0, 0]
    assert pairs.first.tolist() == [0, 0] and pairs.second.tolist() == [1, 2]


def test_read_pairs_names_the_line_of_a_missing_image(tmp_path):
    root = _lfw_folder(tmp_path / "lfw")
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("Ann_Lee\t1\t2\nBo_Chan\t1\t3\n")
    with pytest.raises(DataError, match=r"pairs.txt:2: 'Bo_Chan' has 1 images, there is no image 3"):
        read_pairs(pairs_file, root)
    pairs_file.write_text("Ann_Lee\t1\nZed\t1\t2\n")
    with pytest.raises(DataError, match=r"pairs.txt:1: expected 'NAME N1 N2'"):
        read_pairs(pairs_file, root)


def test_datasets_export_writes_an_identity_folder(tmp_path):
    from typer.testing import CliRunner

    from omnivis.cli import app
    from omnivis.data.readers import read_class_folder

    result = CliRunner().invoke(app, ["datasets", "export", "builtin:orl-faces", "--out", str(tmp_path / "faces")])
    assert result.exit_code == 0, result.output
    written = read_class_folder(tmp_path / "faces")
    assert len(written) == 400 and sorted(written.classes) == sorted(f"s{i}" for i in range(1, 41))
    original = np.asarray(Image.open(load_builtin("builtin:orl-faces").samples[0].source))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "faces" / "s1" / "1.png")), original)
    again = CliRunner().invoke(app, ["datasets", "export", "builtin:orl-faces", "--out", str(tmp_path / "faces")])
    assert again.exit_code != 0 and "not empty" in str(again.exception)
