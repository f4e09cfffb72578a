"""Caption data: generated scenes whose captions are true by construction, digits, CSV and COCO readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.data.builtin import load_digits_data
from omnivis.data.captions import (
    CAPTION_SHAPES,
    SHAPE_COLOURS,
    CaptionData,
    digit_captions,
    load_captioned_digits,
    make_captioned_shapes,
    pair_label,
    read_caption_csv,
    read_coco_captions,
    resolve_caption_data,
)
from omnivis.errors import DataError, SkippedInputWarning

PALETTE = np.array(list(SHAPE_COLOURS.values()), dtype=np.float64)
RELATION = re.compile(r"^an? (?:(?:small|large) )?(\w+) (\w+) (left of|right of|above|below) an? (?:(?:small|large) )?"
                      r"(\w+) (\w+)$")


def _object_mask(image: np.ndarray) -> np.ndarray:
    """Object pixels: the background is grey (channels within noise), every palette colour is vivid."""
    wide = image.astype(np.int16)
    return (wide.max(axis=2) - wide.min(axis=2)) > 60


def _colour_name(image: np.ndarray, mask: np.ndarray) -> str:
    mean = image[mask].astype(np.float64).mean(axis=0)
    return list(SHAPE_COLOURS)[int(np.argmin(np.linalg.norm(PALETTE - mean, axis=1)))]


def _third(coordinate: float, size: int, words: tuple[str, str]) -> str:
    third = min(int(3 * (coordinate + 0.5) / size), 2)
    return {0: words[0], 1: "", 2: words[1]}[third]


def _image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), (value, 20, 200)).save(path)
    return path


def test_shapes_deterministic_and_prefix_stable():
    short, longer = make_captioned_shapes(12, seed=3), make_captioned_shapes(20, seed=3)
    other = make_captioned_shapes(12, seed=4)
    assert len(short) == 12 and len(longer) == 20 and short.source == "builtin:shapes"
    for a, b in zip(short.samples, longer.samples):
        np.testing.assert_array_equal(a.source, b.source)
        assert (a.captions, a.name, a.label, a.objects) == (b.captions, b.name, b.label, b.objects)
    assert any(not np.array_equal(a.source, b.source) for a, b in zip(short.samples, other.samples))
    assert short.classes == [pair_label(c, s) for c in SHAPE_COLOURS for s in CAPTION_SHAPES]
    assert short.classes[:2] == ["red circle", "red square"] and len(short.classes) == 24
    assert [s.name for s in short.samples[:2]] == ["shapes/0000", "shapes/0001"]
    for sample in longer.samples:
        assert sample.source.shape == (32, 32, 3) and sample.source.dtype == np.uint8
        assert len(sample.captions) == 9 == len(set(sample.captions))  # every template, each once
        colour, shape, size = sample.objects[0]
        assert short.classes[sample.label] == f"{colour} {shape}"
        assert sum(f"{colour} {shape}" in caption for caption in sample.captions) == 5
        assert all(colour in caption.split() or shape in caption.split() for caption in sample.captions)
        assert f"a {size} {shape}" in " ".join(sample.captions)
    assert longer.labels().dtype == np.int64 and longer.subset([3, 1]).labels().tolist() == [
        longer.samples[3].label, longer.samples[1].label]


def test_shape_colour_position_and_size_match_captions():
    data = make_captioned_shapes(120, img_size=64, seed=5)
    areas: dict[tuple[str, str], list[int]] = {}
    positions = 0
    for sample in data.samples:
        (colour, shape, size), = sample.objects
        mask = _object_mask(sample.source)
        assert _colour_name(sample.source, mask) == colour
        areas.setdefault((shape, size), []).append(int(mask.sum()))
        cy, cx = np.argwhere(mask).mean(axis=0)
        row, col = _third(cy, 64, ("top", "bottom")), _third(cx, 64, ("left", "right"))
        expected = f"in the {row} {col}" if row and col else f"on the {col}" if col else (
            f"at the {row}" if row else "in the centre")
        for caption in sample.captions:
            words = caption.split()
            assert words[0] in ("a", "an", "something") and (colour in words or shape in words)
            assert not set(words) & (set(SHAPE_COLOURS) - {colour}) and not set(words) & (set(CAPTION_SHAPES) - {shape})
            said = re.search(r" (in the .+|on the .+|at the .+)$", caption)
            if said:
                positions += 1
                assert said.group(1) == expected, (sample.name, caption)
    assert positions > 40
    for shape in CAPTION_SHAPES:  # the size word is the pixel area's order, shape by shape
        assert max(areas[(shape, "small")]) < min(areas[(shape, "large")]), shape


def test_pair_relations_match_centres():
    data = make_captioned_shapes(120, seed=2, max_objects=2)
    assert data.source == "builtin:shapes-pairs"
    checked = 0
    for sample in data.samples:
        image, mask = sample.source, _object_mask(sample.source)
        (c0, k0, _), (c1, k1, _) = sample.objects
        if c0 == c1:
            continue  # the colour is how this test tells the two objects apart
        # The two objects lie in opposite halves with an empty line between them.
        left, right = mask.copy(), mask.copy()
        left[:, 16:], right[:, :16] = False, False
        if mask[:, 16].any() or not left.any() or not right.any():
            left, right = mask.copy(), mask.copy()
            left[16:, :], right[:16, :] = False, False
        assert not (mask[:, 16].any() and mask[16, :].any())
        parts = {_colour_name(image, left): left, _colour_name(image, right): right}
        assert set(parts) == {c0, c1}
        centre = {(c0, k0): np.argwhere(parts[c0]).mean(axis=0), (c1, k1): np.argwhere(parts[c1]).mean(axis=0)}
        for caption in sample.captions:
            found = RELATION.match(caption)
            if found is None:
                assert re.fullmatch(r"an? \w+ \w+ and an? \w+ \w+", caption), caption
                continue
            subject, relation, other = found.group(1, 2), found.group(3), found.group(4, 5)
            assert {subject, other} == {(c0, k0), (c1, k1)}
            dy, dx = centre[subject] - centre[other]
            if abs(dx) >= abs(dy):
                assert relation == ("left of" if dx < 0 else "right of"), (sample.name, caption)
            else:
                assert relation == ("above" if dy < 0 else "below"), (sample.name, caption)
            checked += 1
    assert checked > 100


def test_exclude_pairs_never_drawn():
    held_out = {("red", "circle"), ("blue", "star"), ("green", "square")}
    base = make_captioned_shapes(150, seed=1, max_objects=2)
    data = make_captioned_shapes(150, seed=1, max_objects=2, exclude_pairs=held_out)
    assert data.classes == base.classes  # zero-shot still scores every pair
    unchanged = 0
    for plain, sample in zip(base.samples, data.samples):
        assert not {(c, k) for c, k, _ in sample.objects} & held_out
        assert not any(f"{c} {k}" in caption for caption in sample.captions for c, k in held_out)
        if not {(c, k) for c, k, _ in plain.objects} & held_out:
            np.testing.assert_array_equal(plain.source, sample.source)
            unchanged += 1
    assert 80 < unchanged < 150
    everything = [(c, k) for c in SHAPE_COLOURS for k in CAPTION_SHAPES]
    with pytest.raises(ValueError, match="every"):
        make_captioned_shapes(2, exclude_pairs=everything)
    with pytest.raises(ValueError, match="'pink'"):
        make_captioned_shapes(2, exclude_pairs=[("pink", "circle")])
    with pytest.raises(ValueError):
        make_captioned_shapes(2, max_objects=3)


def test_digit_captions():
    assert digit_captions(3, 0, 5) == digit_captions(3, 0, 5)
    assert len({digit_captions(3, seed, i) for seed in range(3) for i in range(10)}) > 5
    for digit, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")):
        captions = digit_captions(digit, 1, digit)
        assert len(captions) == 3 == len(set(captions))
        assert all(str(digit) in c.split() or word in c.split() for c in captions), captions
    assert "a picture of an eight" in {c for i in range(30) for c in digit_captions(8, 0, i)}
    with pytest.raises(ValueError):
        digit_captions(10, 0, 0)
    data, plain = load_captioned_digits(20), load_digits_data(20)
    assert data.classes[3] == "the digit three" and len(data.classes) == 10 and data.source == "builtin:digits"
    np.testing.assert_array_equal(data.labels(), plain.labels())
    for i, (sample, image) in enumerate(zip(data.samples, plain.samples)):
        np.testing.assert_array_equal(sample.source, image.source)
        assert sample.captions == digit_captions(sample.label, 0, i) and sample.name == image.name
    assert [s.captions for s in load_captioned_digits(20, seed=1).samples] != [s.captions for s in data.samples]


def test_caption_csv_round_trip(tmp_path):
    a, b, c = _image(tmp_path / "a.png"), _image(tmp_path / "b.png"), _image(tmp_path / "sub" / "c.png")
    manifest = tmp_path / "captions.csv"
    manifest.write_text(
        "caption,path,extra\n"
        "a red thing,a.png,x\n"
        "a blue thing,b.png,\n"
        '"another, red thing",a.png,\n'
        "nothing here,missing.png,\n"
        ",sub/c.png,\n"
        "\n"
        "  a green thing  ,sub/c.png,\n"
    )
    with pytest.warns(SkippedInputWarning, match="skipped 2 bad rows"):
        data = read_caption_csv(manifest)
    assert isinstance(data, CaptionData) and data.source == str(manifest) and data.classes == []
    assert [(s.source, s.name, s.captions, s.label) for s in data.samples] == [
        (a, "a.png", ("a red thing", "another, red thing"), -1),
        (b, "b.png", ("a blue thing",), -1),
        (c, "sub/c.png", ("a green thing",), -1),
    ]
    assert data.skipped == [("missing.png", "line 5: file not found"), ("sub/c.png", "line 6: empty caption")]
    with pytest.raises(DataError, match=r"captions\.csv: line 5: file not found: missing\.png"):
        read_caption_csv(manifest, strict=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.png,hello\n")
    with pytest.raises(DataError, match=r"bad\.csv.*'file,text'"):
        read_caption_csv(bad)
    with pytest.warns(SkippedInputWarning):
        assert [s.name for s in resolve_caption_data(str(manifest)).samples] == ["a.png", "b.png", "sub/c.png"]


def test_coco_captions_round_trip(tmp_path):
    a, b = _image(tmp_path / "images" / "a.png"), _image(tmp_path / "images" / "b.png")
    content = {
        "images": [{"id": i, "file_name": name} for i, name in ((1, "a.png"), (2, "b.png"), (3, "gone.png"))],
        "annotations": [
            {"id": 10, "image_id": 2, "caption": "a dog"},
            {"id": 11, "image_id": 1, "caption": "a cat "},
            {"id": 12, "image_id": 1, "caption": "a cat on a mat"},
            {"id": 13, "image_id": 99, "caption": "lost"},
            {"id": 14, "image_id": 3, "caption": "gone"},
            {"id": 15, "image_id": 2, "caption": " "},
        ],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(content))
    with pytest.warns(SkippedInputWarning, match="skipped 3 bad records"):
        data = read_coco_captions(path)  # finds the sibling images/ folder
    assert [(s.source, s.name, s.captions) for s in data.samples] == [
        (a, "a.png", ("a cat", "a cat on a mat")),
        (b, "b.png", ("a dog",)),
    ]
    assert sorted(data.skipped) == [
        ("b.png", "annotation id 15: empty caption"),
        ("captions.json annotation id 13", "annotation id 13: unknown image id 99"),
        ("gone.png", "annotation id 14: file not found"),
    ]
    with pytest.raises(DataError, match=r"captions\.json: annotation id 13: unknown image id 99"):
        read_coco_captions(path, strict=True)
    moved = tmp_path / "elsewhere" / "ann.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(content))
    with pytest.warns(SkippedInputWarning):
        via_resolve = resolve_caption_data(str(moved), images=str(tmp_path / "images"))
    assert [s.captions for s in via_resolve.samples] == [s.captions for s in data.samples]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        read_coco_captions(broken)
    with pytest.raises(DataError, match="'images' and 'annotations'"):
        read_coco_captions(_write(tmp_path / "det.json", {"images": [], "categories": []}))


def _write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_resolve_class_folder(tmp_path):
    _image(tmp_path / "pets" / "cat" / "1.png")
    _image(tmp_path / "pets" / "golden_retriever" / "2.png")
    _image(tmp_path / "pets" / "golden_retriever" / "3.png")
    _image(tmp_path / "pets" / "owl" / "4.png")
    data = resolve_caption_data(str(tmp_path / "pets"))
    assert data.classes == ["a photo of a cat", "a photo of a golden retriever", "a photo of an owl"]
    assert [(s.name, s.captions, s.label) for s in data.samples] == [
        ("cat/1.png", ("a photo of a cat",), 0),
        ("golden_retriever/2.png", ("a photo of a golden retriever",), 1),
        ("golden_retriever/3.png", ("a photo of a golden retriever",), 1),
        ("owl/4.png", ("a photo of an owl",), 2),
    ]
    assert all(isinstance(s.source, Path) and s.source.is_file() for s in data.samples)


def test_resolve_builtins_and_bad_specs(tmp_path):
    shapes = resolve_caption_data("builtin:shapes", seed=7)
    assert len(shapes) == 2000 and all(len(s.objects) == 1 for s in shapes.samples)
    np.testing.assert_array_equal(shapes.samples[5].source, make_captioned_shapes(6, seed=7).samples[5].source)
    assert all(len(s.objects) == 2 for s in resolve_caption_data("builtin:shapes-pairs").samples[:50])
    assert len(resolve_caption_data("builtin:digits")) == 1797
    with pytest.raises(DataError, match="did you mean 'builtin:shapes'"):
        resolve_caption_data("builtin:shape")
    with pytest.raises(DataError, match=r"notes\.txt.*builtin:shapes.*\.csv.*\.json.*class sub-folders"):
        resolve_caption_data(str(tmp_path / "notes.txt"))
    _image(tmp_path / "loose" / "a.png")
    with pytest.raises(DataError, match="class sub-folders"):
        resolve_caption_data(str(tmp_path / "loose"))
    with pytest.raises(DataError, match="COCO"):
        resolve_caption_data(str(tmp_path / "x.csv"), images=str(tmp_path))
    with pytest.raises(DataError, match=r"x\.csv: captions CSV not found"):
        resolve_caption_data(str(tmp_path / "x.csv"))
