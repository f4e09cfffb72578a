"""Detection, segmentation and pretraining read their input size, flips and mean/std off the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.cache import cache_decoded
from omnivis.data.coco import write_coco
from omnivis.data.detection import (
    DetectionDataset,
    build_detection_transform,
    resolve_detection_data,
    shapes_detection_data,
)
from omnivis.data.detection_records import DetectionData, DetectionRecord
from omnivis.data.masks import (
    MaskAugment,
    MaskSample,
    SegmentationData,
    SegmentationDataset,
    build_mask_transform,
    load_shapes_segmentation,
    read_mask_folder,
)
from omnivis.data.profile import detection_size_for
from omnivis.engine.config import TrainerConfig
from omnivis.inference.segment import SegmentPredictor
from omnivis.tasks import detect, segment
from tests.toys import arrow_images

ARROWS = ("left", "right")


@pytest.mark.parametrize(("native", "small", "size"), [
    (64, 10.0, 64),     # small images keep their size (rounded up to a multiple of 32)
    (100, 20.0, 128),
    (640, 100.0, 320),  # large images shrink to 320 when their small objects stay >= 8 px there
    (640, 10.0, 512),   # ... and only as far as 8 * 640 / 10 = 512 when they would not
    (1000, 4.0, 1024),  # never above the native size
])
def test_the_detector_input_size_follows_image_and_object_sizes(native, small, size):
    assert detection_size_for(native, small)[0] == size


def arrow_scenes(per_class: int = 40, side: int = 64, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(grey scene, arrow mask, class) with one 24 px arrow at a seeded place in each scene."""
    rng = np.random.default_rng(seed)
    scenes = []
    for arrow, label in arrow_images(ARROWS, per_class, seed=seed):
        scene = np.full((side, side), 30, dtype=np.uint8)
        y, x = rng.integers(0, side - 24, size=2)
        scene[y:y + 24, x:x + 24] = arrow
        mask = np.zeros((side, side), dtype=bool)
        mask[y:y + 24, x:x + 24] = arrow > 125
        scenes.append((scene, mask, label))
    return scenes


def arrow_detection() -> DetectionData:
    records = []
    for i, (scene, mask, label) in enumerate(arrow_scenes()):
        ys, xs = np.nonzero(mask)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
        records.append(DetectionRecord(np.repeat(scene[..., None], 3, axis=2), box, np.array([label]), mask[None],
                                       f"arrows/{i}", i))
    return DetectionData(records, list(ARROWS), "arrows")


def test_detection_keeps_flips_off_for_arrows_and_on_for_symmetric_shapes():
    config = detect.DetectConfig(data="unused.json", trainer=TrainerConfig(seed=0))
    resolved, mean, std, choices = detect.resolve_from_data(config, arrow_detection())
    assert resolved.hflip is False and resolved.img_size == 64
    assert any(line.startswith("horizontal flips off: on 80 object crops") for line in choices)
    assert mean[0] == mean[1] == mean[2] and 0.0 < std[0] < 1.0  # grey scenes read as RGB

    resolved, _, _, _ = detect.resolve_from_data(config, shapes_detection_data(120, 64, seed=0))
    assert resolved.hflip is True and resolved.img_size == 64
    # a size or flip given by the user is kept and not re-decided
    resolved, _, _, choices = detect.resolve_from_data(
        detect.DetectConfig(data="unused.json", img_size=96, hflip=True), arrow_detection())
    assert resolved.img_size == 96 and resolved.hflip is True and not any("flips" in c for c in choices)


def test_segmentation_keeps_flips_off_for_arrows_and_on_for_symmetric_shapes():
    classes = ["background", *ARROWS]
    samples = [MaskSample(scene, (mask * (label + 1)).astype(np.uint8), f"arrows/{i}")
               for i, (scene, mask, label) in enumerate(arrow_scenes())]
    config = segment.SegmentConfig(data="unused", trainer=TrainerConfig(seed=0))
    resolved, mean, std, _ = segment.resolve_from_data(config, SegmentationData(samples, classes, "arrows"))
    assert resolved.augment.hflip is False and resolved.channels == 1 and resolved.img_size == 64
    assert len(mean) == len(std) == 1

    resolved, mean, _, _ = segment.resolve_from_data(config, load_shapes_segmentation(120, 64, seed=0))
    assert resolved.augment.hflip is True and resolved.channels == 3 and len(mean) == 3


def test_a_mask_folder_run_records_its_defaults_and_predicts_at_the_image_size(tmp_path, capsys):
    root = tmp_path / "arrows"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nleft\nright\n")
    for i, (scene, mask, label) in enumerate(arrow_scenes(per_class=12, side=40)):
        Image.fromarray(scene).save(root / "images" / f"{i:03d}.png")
        Image.fromarray((mask * (label + 1)).astype(np.uint8), mode="L").save(root / "masks" / f"{i:03d}.png")
    config = segment.SegmentConfig(data=str(root), model="omnivis_resnet_micro", decoder_width=16, batch_size=8,
                                   augment=MaskAugment(color_jitter=0.0),
                                   trainer=TrainerConfig(epochs=None, max_steps=3, progress=False, accelerator="cpu"))
    out = segment.train_segmenter(config, tmp_path / "run")
    printed = capsys.readouterr().err
    assert "channels 1" in printed and "img_size 64" in printed and "schedule: 3 steps" in printed

    header = json.loads((out / "config.json").read_text())
    assert header["in_chans"] == 1 and header["img_size"] == 64 and len(header["mean"]) == 1
    assert header["train_config"]["trainer"]["max_steps"] == 3  # the schedule actually run
    assert any(line.startswith("channels 1") for line in header["data_defaults"])
    predicted = SegmentPredictor.from_dir(out).predict_masks([root / "images" / "000.png"])[0]
    assert predicted.shape == (40, 40) and predicted.max() <= 2  # back at the image's own size, known classes


def _same_items(plain, cached, keys) -> None:
    for key in keys:
        (a, ta), (b, tb) = plain[key], cached[key]
        assert torch.equal(a, b)
        if isinstance(ta, dict):
            assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
        else:
            assert torch.equal(ta, tb)


def test_cached_detection_and_mask_images_give_exactly_the_decoded_items(tmp_path):
    coco = write_coco(shapes_detection_data(6, 64, seed=3), tmp_path / "coco" / "ann.json")
    data = resolve_detection_data(str(coco))
    transform = build_detection_transform(48, train=True, hflip=True, scale_min=0.6, photometric=True)
    plain, cached = DetectionDataset(data, transform, seed=4), DetectionDataset(data, transform, seed=4)
    assert cache_decoded(cached, limit_mb=100, progress=False).complete
    _same_items(plain, cached, [(epoch, i) for epoch in (0, 1) for i in range(6)])

    root = tmp_path / "masks"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for sample in load_shapes_segmentation(6, 64, seed=3).samples:
        Image.fromarray(sample.image).save(root / "images" / f"{sample.name[-4:]}.png")
        Image.fromarray(sample.mask, mode="L").save(root / "masks" / f"{sample.name[-4:]}.png")
    masks = read_mask_folder(root)
    transform = build_mask_transform(32, (0.5,) * 3, (0.25,) * 3, MaskAugment(hflip=True))
    plain, cached = SegmentationDataset(masks, transform, "RGB", 4), SegmentationDataset(masks, transform, "RGB", 4)
    assert cache_decoded(cached, limit_mb=100, progress=False).complete
    _same_items(plain, cached, [(epoch, i) for epoch in (0, 1) for i in range(6)])


def test_pretraining_reads_channels_size_and_statistics_off_the_images(tmp_path):
    from omnivis.tasks.pretrain.config import PretrainConfig
    from omnivis.tasks.pretrain.train import load_pretrain_data, resolve_from_data

    root = tmp_path / "arrows"
    root.mkdir()
    for i, (image, _) in enumerate(arrow_images(ARROWS, 10)):  # 24 px grey; no class folders needed
        Image.fromarray(image).save(root / f"{i:03d}.png")
    config = PretrainConfig(data=str(root), method="rotation")
    resolved, (mean, std), choices = resolve_from_data(config, load_pretrain_data(config))
    assert resolved.channels == 1 and resolved.img_size == 32 and len(mean) == len(std) == 1
    assert resolved.hflip is True and not any("flip" in line for line in choices)  # no labels: not re-decided
    pixels = np.stack([image for image, _ in arrow_images(ARROWS, 10)]) / 255.0
    assert mean[0] == pytest.approx(pixels.mean(), abs=0.01)
