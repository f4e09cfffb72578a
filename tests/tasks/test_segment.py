"""Semantic segmentation through the Python API: models, metrics, train, bundle round-trip, eval, init-from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.masks import MaskAugment
from omnivis.bundle import load_bundle
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.segment import SegmentPredictor, evaluate_segmenter
from omnivis.metrics.segmentation import segmentation_metrics
from omnivis.models.backbones import create_backbone
from omnivis.models.segmentation import ARCHS, SegmentationModel
from omnivis.tasks.segment import SegmentConfig, build_model, train_segmenter
from tests.toys import colour_square_scenes, write_colour_squares_masks


def tiny_segment_config(**overrides) -> SegmentConfig:
    """32 px shapes, 48 training scenes: a few seconds on 2 CPU cores."""
    trainer = dict(epochs=1, max_steps=-1, progress=False, seed=0, accelerator="cpu")
    trainer.update(overrides.pop("trainer", {}))
    base = dict(data="builtin:shapes", train_images=48, val_images=16, img_size=32, batch_size=16,
                model="omnivis_resnet_micro", decoder_width=16, augment=MaskAugment(color_jitter=0.0))
    base.update(overrides)
    return SegmentConfig(**base, trainer=TrainerConfig(**trainer))


def test_metrics_match_a_hand_computed_example():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    preds = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 1]]])
    values = segmentation_metrics(preds, target, num_classes=4)
    # 7 scored pixels (255 skipped). class 0: tp 1, fp 1, fn 1 -> IoU 1/3, Dice 2/4;
    # class 1: tp 3, fp 1 -> 3/4, 6/7; class 2: tp 1, fn 1 -> 1/2, 2/3; class 3 absent -> NaN, not averaged
    iou = values["per_class_iou"]
    assert torch.allclose(iou[:3], torch.tensor([1 / 3, 3 / 4, 1 / 2]))
    assert torch.isnan(iou[3])
    assert values["miou"].item() == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert values["dice"].item() == pytest.approx((1 / 2 + 6 / 7 + 2 / 3) / 3)
    assert values["pixel_accuracy"].item() == pytest.approx(5 / 7)
    assert int(values["num_pixels"]) == 7
    logits = torch.nn.functional.one_hot(preds, 4).permute(0, 3, 1, 2).float()
    assert segmentation_metrics(logits, target, 4)["miou"] == values["miou"]  # logits work too


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backbone", ["omnivis_resnet_micro", "omnivis_convnext_tiny", "omnivis_vit_tiny"])
def test_every_arch_on_every_backbone_kind_gives_full_size_logits(arch, backbone):
    model = SegmentationModel(create_backbone(backbone, img_size=64), 5, arch=arch, decoder_width=16)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5, 64, 64)
    assert all(k.startswith(("backbone.model.", "decoder.", "head.")) for k in model.state_dict())


def test_pyramid_maps_backbone_levels_onto_decoder_strides():
    from omnivis.models.segmentation import DEEPLAB_STRIDES, STRIDES, feature_pyramid, pyramid_sources

    resnet, convnext = create_backbone("omnivis_resnet_micro"), create_backbone("omnivis_convnext_tiny")
    assert pyramid_sources(resnet, STRIDES) == [0, 1, 2, 3, 4]  # strides 2..32 match exactly
    assert pyramid_sources(convnext, STRIDES) == [0, 0, 1, 2, 3]  # no stride-2 level: the stride-4 one, upsampled
    assert pyramid_sources(resnet, DEEPLAB_STRIDES)[-1] == 4  # deepest level, resampled to stride 16
    maps = feature_pyramid(resnet.eval(), torch.randn(1, 3, 64, 64), DEEPLAB_STRIDES)
    assert [tuple(m.shape[1:]) for m in maps][-2:] == [(64, 4, 4), (96, 4, 4)]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_trains_a_few_steps(tmp_path, arch):
    out = train_segmenter(tiny_segment_config(arch=arch, trainer=dict(max_steps=3)), tmp_path / arch)
    bundle = load_bundle(out, task="segment")
    assert bundle.config["arch"] == arch and bundle.config["classes"] == ["background", "circle", "square", "triangle"]
    assert 0.0 <= bundle.metrics["miou"] <= 1.0 and bundle.metrics["num_images"] == 16
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "per_class_iou.png").stat().st_size > 1000


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown arch 'pspnet'"):
        SegmentConfig(arch="pspnet")
    with pytest.raises(ConfigError, match="multiple of 32"):
        SegmentConfig(img_size=48)


@pytest.mark.slow
def test_train_learns_a_toy_and_bundle_round_trip_is_identical(tmp_path):
    # a known answer: one solid coloured square on dark grey per image, masked as "square"; 72 training
    # images, 6 epochs: mIoU 0.84-0.87 on the 24 held out on every seed tried (0-5; all background: ~0.4)
    data = write_colour_squares_masks(tmp_path / "toy", n=96)
    config = tiny_segment_config(data=str(data), val_fraction=0.25, batch_size=8, trainer=dict(epochs=6))
    out = train_segmenter(config, tmp_path / "run")
    bundle = load_bundle(out)
    assert bundle.config["classes"] == ["background", "square"] and bundle.metrics["num_images"] == 24
    assert bundle.metrics["miou"] >= 0.7

    images = [scene["image"] for scene in colour_square_scenes(8, 32, side=16, seed=9)]
    first = SegmentPredictor.from_dir(out).predict_masks(images)
    second = SegmentPredictor.from_dir(out).predict_masks(images)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    again = evaluate_segmenter(out, progress=False)  # the bundle's own held-out images
    assert again["miou"] == pytest.approx(bundle.metrics["miou"], abs=1e-6)

    # predictions come back at each image's own size; the summary names foreground classes
    big = np.asarray(Image.fromarray(images[0]).resize((50, 40)))
    result = SegmentPredictor.from_dir(out).predict([big], names=["big"])[0]
    assert result["size"] == [50, 40] and sum(result["class_fractions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["summary"]

    # evaluation on another mask folder holding the same images gives the same numbers as all of this one
    folder = tmp_path / "folder"
    shutil.copytree(data, folder)
    on_folder = evaluate_segmenter(out, data=str(folder), progress=False)
    assert on_folder["num_images"] == 96
    assert on_folder["miou"] == pytest.approx(evaluate_segmenter(out, split="all", progress=False)["miou"], abs=1e-6)
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(folder / "masks" / "000.png")
    with pytest.raises(DataError, match="class index 7"):
        evaluate_segmenter(out, data=str(folder), strict=True, progress=False)


def test_init_from_a_pretrain_bundle_loads_the_backbone(tmp_path):
    from omnivis.tasks.pretrain import PretrainConfig, pretrain

    pre = pretrain(
        PretrainConfig(data="builtin:shapes", max_images=32, method="rotation", model="omnivis_resnet_micro",
                       img_size=32, batch_size=16, trainer=TrainerConfig(max_steps=1, epochs=1, progress=False)),
        tmp_path / "pre",
    )
    config = tiny_segment_config(init_from=str(pre))
    model = build_model(config, 4, pretrained=config.init_from)
    saved = load_bundle(pre).state_dict
    own = model.state_dict()
    shared = [k for k in own if k.startswith("backbone.model.") and k in saved]
    assert shared and all(torch.equal(own[k], saved[k]) for k in shared)
    out = train_segmenter(tiny_segment_config(init_from=str(pre), trainer=dict(max_steps=2)), tmp_path / "seg")
    assert load_bundle(out).config["init_from"] == str(pre)


def test_resume_continues_a_stopped_run(tmp_path):
    out = tmp_path / "run"
    train_segmenter(tiny_segment_config(train_images=32, val_images=8), out)
    with pytest.raises(ConfigError, match="--resume"):
        train_segmenter(tiny_segment_config(train_images=32, val_images=8), out)  # never overwritten
    before = load_bundle(out).state_dict
    train_segmenter(tiny_segment_config(train_images=32, val_images=8, trainer=dict(epochs=2)), out, resume=True)
    after = load_bundle(out).state_dict
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the second epoch changed the weights
    assert (out / "logs" / "metrics.part1.csv").exists()
