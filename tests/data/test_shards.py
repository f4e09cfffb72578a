"""Datasets packed into litdata shards (``omnivis data pack``): round trips per task, bad input, and
training from shards (same batches as from the folder; mid-epoch resume with 0, 1 and 2 workers)."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch
import typer
from lightning.pytorch import Callback
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from omnivis.data.builtin import load_builtin, resolve_classification_data
from omnivis.data.datasets import epoch_batches
from omnivis.data.decode import decode_tensor
from omnivis.data.detection import shapes_detection_data
from omnivis.data.masks import load_shapes_segmentation
from omnivis.data.shards import (
    HEADER_NAME,
    ShardRecord,
    _Packer,
    is_shard_dir,
    pack_classification,
    pack_detection,
    pack_segmentation,
    read_detection_shards,
    read_segmentation_shards,
    read_shard_header,
)
from omnivis.errors import DataError, SkippedInputWarning
from omnivis.tasks.classify import train_classifier
from tests.conftest import tiny_classify_config


def _write_folder(root, per_class: int = 40):
    """Three classes of small PNGs (grey and colour) and JPEGs, with their own sizes."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(["ant", "bee", "cat"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            side = 12 + (i % 5)
            pixels = rng.integers(0, 256, (side, side + 2, 3), dtype=np.uint8)
            pixels[..., c] = 255  # the class shows in one channel
            if i % 4 == 0:
                Image.fromarray(pixels[..., 0]).save(root / name / f"{i:03d}.png")
            elif i % 4 == 1:
                Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)
            else:
                Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("folder") / "images")


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    # ~0.5 KB records, 8 KB shards: a dozen chunk files
    return pack_classification(resolve_classification_data(str(folder)), tmp_path_factory.mktemp("packed") / "shards",
                               shard_size_mb=0.008)


def test_classification_round_trip_keeps_file_bytes_pixels_labels_and_names(folder, shards):
    original = resolve_classification_data(str(folder))
    assert is_shard_dir(shards) and not is_shard_dir(folder)
    assert len(list(shards.glob("chunk-*.bin"))) > 3
    header = read_shard_header(shards)
    assert (header["kind"], header["count"], header["classes"]) == ("classification", 120, ["ant", "bee", "cat"])
    packed = resolve_classification_data(str(shards))
    assert packed.classes == original.classes and len(packed) == len(original)
    for a, b in zip(original.samples, packed.samples):
        assert isinstance(b.source, ShardRecord)
        assert (a.label, a.name) == (b.label, b.name)
        assert b.source.read_bytes() == a.source.read_bytes()  # stored as on disk, not re-encoded
        for mode in ("RGB", "L"):
            assert torch.equal(decode_tensor(a.source, mode), decode_tensor(b.source, mode))


def test_builtin_arrays_are_png_encoded_losslessly(tmp_path):
    digits = load_builtin("digits", n=50)
    packed = resolve_classification_data(str(pack_classification(digits, tmp_path / "digits")))
    assert [s.label for s in packed.samples] == [s.label for s in digits.samples]
    for a, b in zip(digits.samples, packed.samples):
        assert torch.equal(decode_tensor(a.source, "L"), decode_tensor(b.source, "L"))


def test_detection_round_trip_keeps_boxes_labels_and_masks(tmp_path):
    data = shapes_detection_data(12, img_size=32)
    back = read_detection_shards(pack_detection(data, tmp_path / "det", shard_size_mb=0.01))
    assert back.classes == data.classes and back.category_ids == data.category_ids and back.has_masks
    assert len(back.records) == len(data.records)
    for a, b in zip(data.records, back.records):
        assert (a.name, a.image_id) == (b.name, b.image_id)
        assert np.array_equal(a.boxes, b.boxes) and b.boxes.dtype == np.float32
        assert np.array_equal(a.labels, b.labels) and b.labels.dtype == np.int64
        assert np.array_equal(a.masks, b.masks)
        assert torch.equal(decode_tensor(a.source, "RGB"), decode_tensor(b.source, "RGB"))


def test_segmentation_round_trip_keeps_masks(tmp_path):
    data = load_shapes_segmentation(10, img_size=32)
    back = read_segmentation_shards(pack_segmentation(data, tmp_path / "seg"))
    assert back.classes == data.classes and len(back) == len(data)
    for a, b in zip(data.samples, back.samples):
        assert a.name == b.name
        assert np.array_equal(a.mask, b.mask)
        assert torch.equal(decode_tensor(a.image, "RGB"), decode_tensor(b.image, "RGB"))


def test_unreadable_images_are_skipped_and_counted_when_packing_and_reading(tmp_path):
    root = _write_folder(tmp_path / "images", per_class=4)
    (root / "bee" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(SkippedInputWarning):
        data = resolve_classification_data(str(root))
    out = pack_classification(data, tmp_path / "shards")
    assert read_shard_header(out)["skipped"] == [["bee/bad.png", "cannot identify image file"]]
    # a record that went bad inside the shards (written here past the packer's own check)
    good = (root / "ant" / "000.png").read_bytes()
    packer = _Packer(tmp_path / "bad-record", 1.0)
    for i, image in enumerate([good, good[: len(good) // 2], good]):
        packer.add({"image": image, "label": 0, "name": f"r{i}"})
    bad = packer.finish({"kind": "classification", "classes": ["a", "b"], "source": "test", "skipped": [],
                         "records": {"labels": [0, 0, 0], "names": ["r0", "r1", "r2"]}})
    with pytest.warns(SkippedInputWarning, match="r1"):
        read = resolve_classification_data(str(bad))
    assert [s.name for s in read.samples] == ["r0", "r2"] and [name for name, _ in read.skipped] == ["r1"]
    with pytest.raises(DataError, match=r"bad-record\[1\] \(r1\)"):
        resolve_classification_data(str(bad), strict=True)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_chunk_is_named_and_its_records_skipped_or_an_error_when_strict(shards, tmp_path, damage):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    chunks = json.loads((copy / "index.json").read_text())["chunks"]
    victim = copy / chunks[2]["filename"]
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DataError, match=chunks[2]["filename"]):
        resolve_classification_data(str(copy), strict=True)
    start = chunks[0]["chunk_size"] + chunks[1]["chunk_size"]
    with pytest.warns(SkippedInputWarning, match=chunks[2]["filename"]):
        data = resolve_classification_data(str(copy))
    assert len(data) == 120 - chunks[2]["chunk_size"]
    assert all(not start <= s.source.index < start + chunks[2]["chunk_size"] for s in data.samples)
    assert data.skipped[0][0].startswith(chunks[2]["filename"])


def test_ranks_get_equal_batch_counts_from_shards(shards):
    n = len(resolve_classification_data(str(shards)))
    for world in (2, 3, 7):
        counts = {len(epoch_batches(n, 8, train=True, seed=0, rank=r, world_size=world)) for r in range(world)}
        assert len(counts) == 1


def test_unreachable_object_storage_fails_with_one_line_quickly(monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OMNIVIS_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DataError) as caught:
        resolve_classification_data("s3://omnivis-no-such-bucket/x")
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s3://omnivis-no-such-bucket/x: cannot read omnivis_shards.json")


def test_pack_command_writes_shards_and_refuses_a_used_folder(folder, tmp_path):
    from omnivis.commands.data_pack import register

    app = typer.Typer()
    register(app, typer.Typer())
    runner = CliRunner()
    result = runner.invoke(app, ["data", "pack", str(folder), "--out", str(tmp_path / "s"), "--shard-size", "0.01",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["kind"], summary["records"], summary["skipped"]) == ("classification", 120, 0)
    assert (tmp_path / "s" / HEADER_NAME).is_file() and summary["shards"] > 1
    result = runner.invoke(app, ["data", "pack", str(folder), "--out", str(tmp_path / "s")])
    assert isinstance(result.exception, DataError) and "not empty" in str(result.exception)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # nothing half-written left


# ------------------------------------------------------------------------------------------------
# Training from shards
# ------------------------------------------------------------------------------------------------

class _Batches(Callback):
    """Records a digest of every training batch by global step; dies after ``kill_at`` steps."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.seen = kill_at, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, labels = batch
        digest = hashlib.sha1(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
        self.seen[trainer.global_step] = digest

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.kill_at is not None and trainer.global_step >= self.kill_at:
            raise RuntimeError("killed")


def _config(data, workers: int = 0, **trainer):
    # 120 images, 30% held out: 84 for training, batch 16: 5 steps per epoch. cache_mb 0: every image is
    # read from the shards in the loader's workers, each epoch.
    settings = dict(epochs=2, num_workers=workers, cache_mb=0.0, checkpoint_every_n_steps=1, **trainer)
    return tiny_classify_config(data=str(data), batch_size=16, channels=3, trainer=settings)


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(folder, tmp_path_factory):
    """An uninterrupted run on the folder: its batches and weights."""
    batches = _Batches()
    run = train_classifier(_config(folder), tmp_path_factory.mktemp("straight") / "run", callbacks=[batches])
    return batches.seen, _weights(run)


def test_training_from_shards_sees_the_folders_batches(shards, straight, tmp_path):
    batches = _Batches()
    run = train_classifier(_config(shards), tmp_path / "run", callbacks=[batches])
    assert batches.seen == straight[0] and len(batches.seen) == 10
    assert _same_weights(_weights(run), straight[1])
    assert json.loads((run / "config.json").read_text())["data"] == str(shards)


@pytest.mark.parametrize("workers,resumed_workers", [(0, 0), (1, 1), (2, 2), (2, 0), (0, 1)])
def test_mid_epoch_resume_from_shards_sees_the_same_batches(shards, straight, tmp_path, monkeypatch, workers,
                                                             resumed_workers):
    from omnivis.engine.trainer import CheckpointOnException

    run = tmp_path / "run"
    first = _Batches(kill_at=7)  # mid-way through the second epoch
    with monkeypatch.context() as patch:  # killed as by SIGKILL: no checkpoint written on the way out
        patch.setattr(CheckpointOnException, "on_exception", lambda *args: None)
        with pytest.raises(RuntimeError, match="killed"):
            train_classifier(_config(shards, workers), run, callbacks=[first])
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 5 < saved < 10  # mid-way through the second epoch
    second = _Batches()
    resumed = train_classifier(_config(shards, resumed_workers), run, resume=True, callbacks=[second])
    assert sorted(second.seen) == list(range(saved, 10))
    assert {**first.seen, **second.seen} == straight[0]
    assert _same_weights(_weights(resumed), straight[1])


def test_detect_and_segment_train_from_shards_as_from_their_files(tmp_path):
    """Every task's --data takes shards: the same split, batches and so weights as the COCO file or mask
    folder they were packed from (evaluation reads the shards too)."""
    from omnivis.data.detection import resolve_detection_data
    from omnivis.data.masks import resolve_segmentation_data
    from omnivis.inference.detect import evaluate_detector
    from omnivis.inference.segment import evaluate_segmenter
    from omnivis.tasks.detect import train_detector
    from omnivis.tasks.segment import train_segmenter
    from tests.tasks.test_detect import tiny_detect_config
    from tests.tasks.test_segment import tiny_segment_config
    from tests.toys import write_colour_squares_coco, write_colour_squares_masks

    coco, _, _ = write_colour_squares_coco(tmp_path / "coco", n=24)
    det_shards = pack_detection(resolve_detection_data(str(coco)), tmp_path / "det", shard_size_mb=0.01)
    with pytest.raises(DataError, match="--images is only for a COCO"):
        resolve_detection_data(str(det_shards), images=tmp_path)
    det = {}
    for name, data in (("file", coco), ("shards", det_shards)):
        config = tiny_detect_config(data=str(data), img_size=32, val_fraction=0.25, trainer=dict(max_steps=3))
        det[name] = train_detector(config, tmp_path / f"det-{name}")
    assert _same_weights(_weights(det["file"]), _weights(det["shards"]))
    on_shards = evaluate_detector(det["file"], data=str(det_shards), split="all", progress=False)
    on_file = evaluate_detector(det["file"], data=str(coco), split="all", progress=False)
    assert on_shards["num_images"] == on_file["num_images"] == 24
    assert on_shards["map50"] == pytest.approx(on_file["map50"], abs=1e-9)

    masks = write_colour_squares_masks(tmp_path / "masks", n=24)
    seg_shards = pack_segmentation(resolve_segmentation_data(str(masks)), tmp_path / "seg", shard_size_mb=0.01)
    seg = {}
    for name, data in (("folder", masks), ("shards", seg_shards)):
        config = tiny_segment_config(data=str(data), val_fraction=0.25, batch_size=8, trainer=dict(max_steps=3))
        seg[name] = train_segmenter(config, tmp_path / f"seg-{name}")
    assert _same_weights(_weights(seg["folder"]), _weights(seg["shards"]))
    on_shards = evaluate_segmenter(seg["folder"], data=str(seg_shards), split="all", progress=False)
    assert on_shards["num_images"] == 24
    assert on_shards["miou"] == pytest.approx(
        evaluate_segmenter(seg["folder"], data=str(masks), split="all", progress=False)["miou"], abs=1e-6)
