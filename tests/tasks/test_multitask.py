"""Multi-task (classification + segmentation) through the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.engine.bundle import load_bundle, save_bundle
from omnivis.engine.trainer import TrainerConfig, seed_everything
from omnivis.errors import ConfigError
from omnivis.models.multitask import LossWeighting
from omnivis.tasks.multitask import (
    MultitaskConfig,
    MultitaskDataset,
    MultitaskPredictor,
    build_model,
    drop_labels,
    evaluate_multitask,
    load_shapes_multitask,
    train_multitask,
)
from omnivis.data.masks import build_mask_transform


def tiny_multitask_config(**overrides) -> MultitaskConfig:
    trainer = dict(epochs=1, max_steps=-1, progress=False, seed=0, accelerator="cpu")
    trainer.update(overrides.pop("trainer", {}))
    base = dict(train_images=64, val_images=32, img_size=32, batch_size=16, model="omnivis_resnet_micro",
                arch="unet", decoder_width=16)
    base.update(overrides)
    return MultitaskConfig(**base, trainer=TrainerConfig(**trainer))


def test_uncertainty_weighting_follows_kendall_and_skips_missing_tasks():
    weighting = LossWeighting(("classify", "segment"), "uncertainty")
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0]))
    losses = {"classify": torch.tensor(2.0), "segment": torch.tensor(3.0)}
    expected = np.exp(-0.5) * 2.0 + 0.5 + np.exp(1.0) * 3.0 - 1.0
    assert weighting(losses).item() == pytest.approx(expected, rel=1e-6)
    assert weighting({"classify": torch.tensor(2.0), "segment": None}).item() == pytest.approx(np.exp(-0.5) * 2 + 0.5)
    fixed = LossWeighting(("classify", "segment"), "fixed", {"classify": 0.5, "segment": 2.0})
    assert fixed(losses).item() == pytest.approx(0.5 * 2 + 2.0 * 3)
    assert fixed.log_vars is None and fixed.effective_weights() == {"classify": 0.5, "segment": 2.0}


def test_label_fractions_drop_masks_and_labels_reproducibly():
    data = load_shapes_multitask(20, 32, seed=0)
    assert all(0 <= y < 3 for y in data.labels)
    part = drop_labels(data, seg_fraction=0.25, cls_fraction=0.5, seed=3)
    assert sum(m is not None for m in part.masks) == 5 and sum(y >= 0 for y in part.labels) == 10
    again = drop_labels(data, 0.25, 0.5, seed=3)
    assert [m is None for m in again.masks] == [m is None for m in part.masks]
    tf = build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, None)
    missing = next(i for i, m in enumerate(part.masks) if m is None)
    _, mask, _ = MultitaskDataset(part, tf)[missing]
    assert (mask == 255).all()  # no mask: every pixel ignored, so the segmentation loss skips it
    with pytest.raises(ConfigError, match="builtin:shapes"):
        MultitaskConfig(data="builtin:digits")
    with pytest.raises(ConfigError, match="cannot both be 0"):
        MultitaskConfig(seg_label_fraction=0, cls_label_fraction=0)


def test_fixed_weighting_trains_a_few_steps(tmp_path):
    out = train_multitask(tiny_multitask_config(weighting="fixed", cls_weight=2.0, trainer=dict(max_steps=2)), tmp_path / "f")
    bundle = load_bundle(out, task="multitask")
    assert bundle.metrics["loss_weight_classify"] == 2.0 and bundle.metrics["loss_weight_segment"] == 1.0
    assert {"accuracy", "miou", "dice", "pixel_accuracy"} <= set(bundle.metrics)


@pytest.mark.slow
def test_trains_one_bundle_that_predicts_both_and_beats_untrained(tmp_path):
    config = tiny_multitask_config(train_images=128, seg_label_fraction=0.5, trainer=dict(epochs=6))
    out = train_multitask(config, tmp_path / "run")
    bundle = load_bundle(out, task="multitask")
    assert bundle.metrics["labelled_masks"] == 64 and bundle.metrics["labelled_classes"] == 128
    # the learned uncertainty weights moved away from their start (1, 1)
    assert bundle.metrics["loss_weight_classify"] != 1.0 and bundle.metrics["loss_weight_segment"] != 1.0

    seed_everything(0)
    untrained = tmp_path / "untrained"
    save_bundle(untrained, build_model(config).state_dict(), bundle.config)
    before = evaluate_multitask(untrained, progress=False)
    after = evaluate_multitask(out, progress=False)
    assert after["miou"] == pytest.approx(bundle.metrics["miou"], abs=1e-6)
    assert after["miou"] > before["miou"] + 0.1
    assert after["accuracy"] > before["accuracy"]  # both heads learned

    scenes = load_shapes_multitask(3, 32, seed=9)
    paths = [tmp_path / f"s{i}.png" for i in range(3)]
    for path, image in zip(paths, scenes.images):
        Image.fromarray(image).save(path)
    predictor = MultitaskPredictor.from_dir(out)
    results = predictor.predict(paths, top_k=2, names=[str(p) for p in paths])
    for r in results:
        assert r["label"] in ("circle", "square", "triangle") and len(r["classification"]["top_k"]) == 2
        assert sum(r["class_fractions"].values()) == pytest.approx(1.0, abs=1e-4) and "mask:" in r["summary"]
    written = predictor.save_visualizations(paths, results, tmp_path / "viz")
    assert sorted(p.name for p in written) == sorted(f"s{i}_{kind}.png" for i in range(3) for kind in ("mask", "overlay"))
    mask = np.asarray(Image.open(tmp_path / "viz" / "s0_mask.png"))
    assert np.mean(mask == 0) == pytest.approx(results[0]["class_fractions"]["background"], abs=1e-4)
