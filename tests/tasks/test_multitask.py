"""Multi-task (classification + segmentation + detection) through the Python API (and one CLI run)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.masks import MaskAugment, build_mask_transform
from omnivis.bundle import load_bundle, save_bundle
from omnivis.seeding import seed_everything
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import ConfigError
from omnivis.inference.multitask import MultitaskPredictor, evaluate_multitask
from omnivis.models.backbones import create_backbone
from omnivis.models.multitask import LossWeighting, MultiTaskModel
from omnivis.tasks.multitask import (
    MultitaskConfig,
    MultitaskDataset,
    MultitaskModule,
    build_model,
    bundle_config,
    drop_labels,
    load_shapes_multitask,
    model_targets,
    multitask_collate,
    train_multitask,
)
from tests.toys import colour_square_scenes, write_colour_squares_coco

ALL = "classify,segment,detect"


def tiny_multitask_config(**overrides) -> MultitaskConfig:
    trainer = dict(epochs=1, max_steps=-1, progress=False, seed=0, accelerator="cpu")
    trainer.update(overrides.pop("trainer", {}))
    base = dict(train_images=64, val_images=32, img_size=32, batch_size=16, model="omnivis_resnet_micro",
                arch="unet", decoder_width=16)
    base.update(overrides)
    return MultitaskConfig(**base, trainer=TrainerConfig(**trainer))


def test_uncertainty_weighting_follows_kendall_and_skips_missing_tasks():
    weighting = LossWeighting(("classify", "segment", "detect"), "uncertainty")
    assert weighting.log_vars.shape == (3,)  # one learned log-variance per head
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0, 0.25]))
    losses = {"classify": torch.tensor(2.0), "segment": torch.tensor(3.0), "detect": torch.tensor(4.0)}
    expected = np.exp(-0.5) * 2.0 + 0.5 + np.exp(1.0) * 3.0 - 1.0 + np.exp(-0.25) * 4.0 + 0.25
    assert weighting(losses).item() == pytest.approx(expected, rel=1e-6)
    no_boxes = {"classify": torch.tensor(2.0), "segment": None, "detect": None}
    assert weighting(no_boxes).item() == pytest.approx(np.exp(-0.5) * 2 + 0.5)
    fixed = LossWeighting(("classify", "segment", "detect"), "fixed", {"classify": 0.5, "segment": 2.0, "detect": 3.0})
    assert fixed(losses).item() == pytest.approx(0.5 * 2 + 2.0 * 3 + 3.0 * 4)
    assert fixed.log_vars is None and fixed.effective_weights() == {"classify": 0.5, "segment": 2.0, "detect": 3.0}


def test_tasks_option_parses_validates_and_suggests():
    assert MultitaskConfig().tasks == ("classify", "segment")  # the default before detection joined
    assert MultitaskConfig(tasks="detect, classify").tasks == ("classify", "detect")  # canonical order
    assert MultitaskConfig(tasks=["segment", "detect"]).tasks == ("segment", "detect")  # a run_config.json list
    with pytest.raises(ConfigError, match="unknown task 'detcet'; did you mean 'detect'"):
        MultitaskConfig(tasks="classify,detcet")
    with pytest.raises(ConfigError, match="at least one"):
        MultitaskConfig(tasks=" , ")
    with pytest.raises(ConfigError, match="RGB"):
        MultitaskConfig(tasks=ALL, channels=1)
    with pytest.raises(ConfigError, match="builtin:shapes"):
        MultitaskConfig(data="builtin:digits")
    with pytest.raises(ConfigError, match="cannot all be 0"):
        MultitaskConfig(seg_label_fraction=0, cls_label_fraction=0)
    MultitaskConfig(tasks=ALL, seg_label_fraction=0, cls_label_fraction=0)  # boxes alone are enough


def test_label_fractions_drop_masks_labels_and_boxes_reproducibly():
    data = load_shapes_multitask(20, 32, seed=0)
    assert all(0 <= y < 3 for y in data.labels) and all(len(b) == len(c) >= 1 for b, c in zip(data.boxes, data.box_labels))
    part = drop_labels(data, seg_fraction=0.25, cls_fraction=0.5, seed=3, det_fraction=0.75)
    assert sum(m is not None for m in part.masks) == 5 and sum(y >= 0 for y in part.labels) == 10
    assert sum(b is not None for b in part.boxes) == 15
    again = drop_labels(data, 0.25, 0.5, seed=3, det_fraction=0.75)
    assert [b is None for b in again.boxes] == [b is None for b in part.boxes]
    tf = build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, None)
    missing = next(i for i, m in enumerate(part.masks) if m is None)
    assert (MultitaskDataset(part, tf)[missing][1] == 255).all()  # no mask: every pixel ignored
    no_boxes = next(i for i, b in enumerate(part.boxes) if b is None)
    assert MultitaskDataset(part, tf)[no_boxes][3] is None  # no boxes: the detection loss skips it
    images, masks, labels, targets = multitask_collate([MultitaskDataset(part, tf)[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 32, 32) and labels.shape == (4,) and len(targets) == 4


def test_augmentation_moves_boxes_with_the_image_and_mask():
    data = load_shapes_multitask(12, 64, seed=0)
    augment = MaskAugment(hflip=True, scale_min=0.5, color_jitter=0.0)
    dataset = MultitaskDataset(data, build_mask_transform(64, (0.5,) * 3, (0.5,) * 3, augment), seed=1)
    moved = 0
    for index in range(len(data)):
        _, mask, _, target = dataset[(2, index)]
        assert torch.equal(dataset[(2, index)][3]["boxes"], target["boxes"])  # seeded by (seed, epoch, index)
        moved += not torch.equal(target["boxes"], torch.as_tensor(data.boxes[index]))
        for box, label in zip(target["boxes"].round().long().tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            region = mask[max(y1, 0) : y2, max(x1, 0) : x2]
            assert (region == label + 1).any(), f"scene {index}: box {box} has no pixel of its class in the mask"
    assert moved >= len(data) // 2  # the crops and flips really moved the boxes


def test_detection_branch_matches_torchvision_fcos_on_shared_features():
    """The shared-feature loss and decoding are torchvision FCOS's own: same numbers as FCOS.forward."""
    seed_everything(0)
    model = build_model(tiny_multitask_config(tasks=ALL, img_size=64))
    fcos = model.detector.fcos  # a full torchvision FCOS over the same backbone, FPN and head
    fcos.transform.image_mean, fcos.transform.image_std = [0.0] * 3, [1.0] * 3
    data = load_shapes_multitask(3, 64, seed=4)
    images = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in data.images])
    targets = model_targets([{"boxes": torch.as_tensor(b), "labels": torch.as_tensor(c)}
                             for b, c in zip(data.boxes, data.box_labels)])
    model.train()
    fcos.train()
    ours = model.detector.loss(model(images)["detect"], targets)
    reference = fcos(list(images), targets)
    assert set(ours) == set(reference) == {"classification", "bbox_regression", "bbox_ctrness"}
    for name in ours:
        assert ours[name].item() == pytest.approx(reference[name].item(), rel=1e-5)
    model.eval()
    fcos.eval()
    with torch.no_grad():
        ours = model.detector.detections(model(images)["detect"], (64, 64))
        reference = fcos(list(images))
    for a, b in zip(ours, reference):
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4) and torch.equal(a["labels"], b["labels"])


def test_partial_label_batches_train(tmp_path):
    config = tiny_multitask_config(tasks=ALL)
    seed_everything(0)
    module = MultitaskModule(config)
    data = drop_labels(load_shapes_multitask(8, 32, seed=0), 1.0, 1.0, seed=0, det_fraction=0.0)
    tf = build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, None)
    images, masks, labels, targets = multitask_collate([MultitaskDataset(data, tf)[i] for i in range(8)])
    assert all(t is None for t in targets)
    losses = module.task_losses(module.model(images), masks, labels, targets)
    assert losses["detect"] is None and torch.isfinite(losses["classify"]) and torch.isfinite(losses["segment"])
    module.weighting(losses).backward()
    assert module.weighting.log_vars.grad[2] == 0  # the missing task's log-variance is left alone
    assert all(p.grad is None for p in module.model.detector.parameters())
    assert module.model.classifier[1].weight.grad.abs().sum() > 0
    # a batch with no label of any kind gives a zero loss that still backpropagates
    module.zero_grad()
    loss = module.training_step((images, torch.full_like(masks, 255), torch.full_like(labels, -1), targets), 0)
    loss.backward()
    assert loss.item() == 0.0

    out = train_multitask(tiny_multitask_config(tasks=ALL, batch_size=8, det_label_fraction=0.25,
                                                trainer=dict(max_steps=3)), tmp_path / "partial")
    metrics = load_bundle(out, task="multitask").metrics
    assert metrics["labelled_boxes"] == 16 and {"accuracy", "miou", "map", "map50"} <= set(metrics)


def test_fixed_weighting_trains_a_few_steps(tmp_path):
    out = train_multitask(tiny_multitask_config(weighting="fixed", cls_weight=2.0, trainer=dict(max_steps=2)), tmp_path / "f")
    bundle = load_bundle(out, task="multitask")
    assert bundle.metrics["loss_weight_classify"] == 2.0 and bundle.metrics["loss_weight_segment"] == 1.0
    assert {"accuracy", "miou", "dice", "pixel_accuracy"} <= set(bundle.metrics) and "map" not in bundle.metrics
    assert bundle.config["tasks"] == ["classify", "segment"]


def test_two_task_bundle_from_before_detection_still_loads(tmp_path):
    config = tiny_multitask_config()
    seed_everything(0)
    model = build_model(config)
    # the key layout of a classify + segment model is unchanged by the detection head's arrival
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "decoder", "head", "classifier"}
    old = bundle_config(config, 64)
    del old["tasks"]  # written before detection joined
    old["train_config"].pop("tasks")
    save_bundle(tmp_path / "old", model.state_dict(), old)
    predictor = MultitaskPredictor.from_dir(tmp_path / "old")
    assert predictor.tasks == ("classify", "segment")
    scenes = load_shapes_multitask(2, 32, seed=9)
    results = predictor.predict(scenes.images)
    assert all("label" in r and "class_fractions" in r and "detections" not in r for r in results)
    metrics = evaluate_multitask(tmp_path / "old", progress=False)
    assert {"accuracy", "miou"} <= set(metrics) and "map" not in metrics
    detector_only = MultiTaskModel(create_backbone("omnivis_resnet_micro", 3), 3, 4, tasks=("detect",),
                                   num_det_classes=3, img_size=32)
    assert {k.split(".")[0] for k in detector_only.state_dict()} == {"backbone", "detector"}


class _KeepModule(pl.Callback):
    def on_fit_end(self, trainer, pl_module) -> None:
        self.module = pl_module


@pytest.mark.slow
def test_three_heads_learn_a_toy_into_one_bundle_that_predicts_all(tmp_path):
    # A known answer for every head: one solid red, green or blue square per image on dark grey; the
    # image's class is its colour (labels CSV), the mask and the box are the square's (one COCO
    # category). 72 training images, half with masks, 8 epochs: on every seed tried (0-7) accuracy
    # 0.96-1.0, mIoU 0.89-0.94 and mAP50 1.0 on the 24 held-out images, far above the bounds below.
    ann, images, labels = write_colour_squares_coco(tmp_path / "toy", n=96, side=16)
    config = tiny_multitask_config(data=str(ann), images=str(images), labels=str(labels), tasks=ALL, batch_size=8,
                                   val_fraction=0.25, seg_label_fraction=0.5, trainer=dict(epochs=8))
    keep = _KeepModule()
    out = train_multitask(config, tmp_path / "run", callbacks=[keep])
    bundle = load_bundle(out, task="multitask")
    assert bundle.config["tasks"] == ["classify", "segment", "detect"]
    assert bundle.config["classes"] == ["blue", "green", "red"] and bundle.config["det_classes"] == ["square"]
    assert bundle.metrics["labelled_masks"] == 36 and bundle.metrics["labelled_classes"] == 72
    # the learned uncertainty weights moved away from their start (1, 1, 1)
    assert all(bundle.metrics[f"loss_weight_{t}"] != 1.0 for t in ("classify", "segment", "detect"))

    after = evaluate_multitask(out, out_dir=tmp_path / "eval", progress=False)  # the held-out 25%
    for key in ("accuracy", "miou", "map50"):
        assert after[key] == pytest.approx(bundle.metrics[key], abs=1e-6)
    assert after["num_images"] == 24
    # all three heads learned (chance: accuracy 1/3, mIoU ~0.4 for an all-background mask, mAP50 ~0)
    assert after["accuracy"] >= 0.8 and after["miou"] >= 0.75 and after["map50"] >= 0.8, after
    assert (tmp_path / "eval" / "pr_curve.png").exists() and set(after["det_per_class"]) == {"square"}

    paths = [tmp_path / f"s{i}.png" for i in range(3)]
    for path, scene in zip(paths, colour_square_scenes(3, 32, side=16, seed=9)):
        Image.fromarray(scene["image"]).save(path)
    predictor = MultitaskPredictor.from_dir(out)
    # the reloaded bundle gives exactly what the trained model in memory gives, for all three heads
    live = MultitaskPredictor.from_dir(out)
    live.model = live.graph.model = keep.module.model.eval()
    ours, theirs = predictor.predict_outputs(paths), live.predict_outputs(paths)
    assert torch.equal(ours["classify"], theirs["classify"])
    assert all(np.array_equal(a, b) for a, b in zip(ours["segment"], theirs["segment"]))
    for a, b in zip(ours["detect"], theirs["detect"]):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "scores", "labels")) and len(a["boxes"]) > 0

    predictor.score_threshold = 0.0  # report every box, so the pictures have some to draw
    results = predictor.predict(paths, top_k=2, names=[str(p) for p in paths])
    for r in results:
        assert r["label"] in ("blue", "green", "red") and len(r["classification"]["top_k"]) == 2
        assert sum(r["class_fractions"].values()) == pytest.approx(1.0, abs=1e-4) and "mask:" in r["summary"]
        assert r["detections"] and all(d["label"] == "square" and len(d["box"]) == 4 for d in r["detections"])
        assert "boxes:" in r["summary"]
    written = predictor.save_visualizations(paths, results, tmp_path / "viz")
    kinds = ("mask", "overlay", "boxes")
    assert sorted(p.name for p in written) == sorted(f"s{i}_{kind}.png" for i in range(3) for kind in kinds)
    mask = np.asarray(Image.open(tmp_path / "viz" / "s0_mask.png"))
    assert np.mean(mask == 0) == pytest.approx(results[0]["class_fractions"]["background"], abs=1e-4)
    boxes_png = Image.open(tmp_path / "viz" / "s0_boxes.png")
    assert boxes_png.size == (256, 256)  # 32 px enlarged so the labels can be read


@pytest.mark.slow
def test_cli_three_heads_train_eval_predict(tmp_path):
    import json

    from tests.test_cli import omnivis

    out = tmp_path / "mt3"
    args = ["--tasks", "classify,segment,detect", "--img-size", "32", "--train-images", "32", "--val-images", "8",
            "--model", "omnivis_resnet_micro", "--decoder-width", "16", "--det-label-fraction", "0.5",
            "--score-threshold", "0", "--max-steps", "2", "--accelerator", "cpu", "--no-progress"]
    trained = json.loads(omnivis("train", "multitask", *args, "--out", str(out), "--json").stdout)
    assert trained["labelled_boxes"] == 16 and {"accuracy", "miou", "map", "map50"} <= set(trained)
    metrics = json.loads(omnivis("eval", str(out), "--json").stdout)
    assert metrics["map50"] == pytest.approx(trained["map50"], abs=1e-6) and Path(metrics["pr_curve_png"]).exists()
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(load_shapes_multitask(1, 32, seed=7).images[0]).save(folder / "s0.png")
    results = json.loads(omnivis("predict", str(out), str(folder), "--out", str(tmp_path / "viz"), "--json").stdout)
    assert {"label", "class_fractions", "detections"} <= set(results[0]) and "boxes:" in results[0]["summary"]
    assert (tmp_path / "viz" / "s0_boxes.png").exists()
    bad = omnivis("train", "multitask", "--tasks", "classify,detcet", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "did you mean 'detect'" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------------------------
# COCO file + labels CSV
# ----------------------------------------------------------------------------------------------


def coco_files(root: Path, n: int = 24, no_segmentation: str = "000001.png") -> tuple[Path, Path, Path]:
    """Shapes scenes as a user's files: COCO categories renamed (ball, box, wedge), one image's
    annotations stripped of their segmentation, and a CSV of image classes (one / many objects)
    unrelated to the shape names, so the bundle must take each head's classes from its own source."""
    import json

    from omnivis.data.multitask import write_shapes_coco

    ann = write_shapes_coco(root / "data", n=n, img_size=32, seed=0)
    coco = json.loads(ann.read_text())
    for category, name in zip(coco["categories"], ("ball", "box", "wedge")):
        category["name"] = name
    stripped = next(im["id"] for im in coco["images"] if im["file_name"] == no_segmentation)
    for a in coco["annotations"]:
        if a["image_id"] == stripped:
            del a["segmentation"]
    ann.write_text(json.dumps(coco))
    counts = {im["file_name"]: sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]}
    labels = root / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{name},{'one' if k == 1 else 'many'}\n" for name, k in counts.items()))
    return ann, root / "data", labels


def test_coco_files_train_three_heads_that_reload_and_name_their_classes(tmp_path):
    ann, images, labels = coco_files(tmp_path)
    with pytest.raises(ConfigError, match="pass --labels CSV"):
        tiny_multitask_config(data=str(ann), tasks=ALL)
    with pytest.raises(ConfigError, match="COCO --data file"):
        tiny_multitask_config(labels=str(labels))
    with pytest.raises(ConfigError, match="COCO JSON file"):
        tiny_multitask_config(data=str(images))
    no_classify = bundle_config(tiny_multitask_config(data=str(ann), tasks="segment,detect"), 0, [], ["ball"])
    assert no_classify["classes"] == [] and no_classify["seg_classes"] == ["background", "ball"]  # no shapes names
    config = tiny_multitask_config(data=str(ann), images=str(images), labels=str(labels), tasks=ALL, batch_size=8,
                                   val_fraction=0.25, score_threshold=0.0, trainer=dict(max_steps=3))
    out = train_multitask(config, tmp_path / "run")
    bundle = load_bundle(out, task="multitask")
    assert bundle.config["classes"] == ["many", "one"]  # from the CSV
    assert bundle.config["det_classes"] == ["ball", "box", "wedge"]  # from the COCO categories
    assert bundle.config["seg_classes"] == ["background", "ball", "box", "wedge"]
    split = bundle.config["split"]
    assert split["kind"] == "fraction" and split["train_size"] == 18 and bundle.metrics["num_images"] == 6
    assert bundle.metrics["labelled_boxes"] == 18 and bundle.metrics["labelled_masks"] in (17, 18)
    assert bundle.metrics["skipped_inputs"] == 0
    # `omnivis eval BUNDLE`: the same held-out images, found through the bundle's absolute paths
    again = evaluate_multitask(out, progress=False)
    for key in ("accuracy", "miou", "map50"):
        assert again[key] == pytest.approx(bundle.metrics[key], abs=1e-6)
    assert again["num_images"] == 6 and set(again["det_per_class"]) == {"ball", "box", "wedge"}
    everything = evaluate_multitask(out, data=str(ann), split="all", images=images, labels=labels, progress=False)
    assert everything["num_images"] == 24 and everything["num_box_images"] == 24

    predictor = MultitaskPredictor.from_dir(out)
    results = predictor.predict([images / "000000.png", images / "000001.png"])
    for r in results:
        assert r["label"] in ("many", "one") and set(r["class_fractions"]) <= {"background", "ball", "box", "wedge"}
        assert r["detections"] and {d["label"] for d in r["detections"]} <= {"ball", "box", "wedge"}
    outputs = predictor.predict_outputs([images / "000000.png"])
    assert outputs["classify"].shape == (1, 2) and outputs["segment"][0].shape == (32, 32)


def test_an_image_without_segmentation_skips_only_the_segment_loss(tmp_path):
    from omnivis.data.multitask import load_coco_multitask

    ann, images, labels = coco_files(tmp_path, n=4)
    data = load_coco_multitask(ann, images, labels)
    assert data.masks[1] is None and all(data.masks[i] is not None for i in (0, 2, 3))
    config = tiny_multitask_config(data=str(ann), images=str(images), labels=str(labels), tasks=ALL)
    seed_everything(0)
    module = MultitaskModule(config, data.classes, data.det_classes).eval()  # eval: BatchNorm ignores the batch
    tf = build_mask_transform(32, (0.5,) * 3, (0.5,) * 3, None)
    dataset = MultitaskDataset(data, tf)

    def losses(indices: list[int]) -> dict:
        images_t, masks, labels_t, targets = multitask_collate([dataset[i] for i in indices])
        with torch.no_grad():
            return module.task_losses(module.model(images_t), masks, labels_t, targets)

    alone = losses([1])
    assert alone["segment"] is None and torch.isfinite(alone["classify"]) and torch.isfinite(alone["detect"])
    # next to a masked image, the unmasked one adds nothing to the segmentation loss
    assert losses([1, 2])["segment"].item() == pytest.approx(losses([2])["segment"].item(), rel=1e-5)
    assert losses([1, 2])["classify"].item() != pytest.approx(losses([2])["classify"].item(), rel=1e-5)


@pytest.mark.slow
def test_cli_coco_files_train_eval_predict(tmp_path):
    import json

    from tests.test_cli import omnivis

    ann, images, labels = coco_files(tmp_path)
    out = tmp_path / "mt-coco"
    args = ["--data", str(ann), "--images", str(images), "--labels", str(labels), "--tasks", "classify,segment,detect",
            "--img-size", "32", "--model", "omnivis_resnet_micro", "--decoder-width", "16", "--batch-size", "8",
            "--score-threshold", "0", "--epochs", "1", "--max-steps", "3", "--accelerator", "cpu", "--no-progress"]
    trained = json.loads(omnivis("train", "multitask", *args, "--out", str(out), "--json").stdout)
    assert {"accuracy", "miou", "map", "map50"} <= set(trained) and trained["labelled_boxes"] == 19
    metrics = json.loads(omnivis("eval", str(out), "--json").stdout)  # the held-out 20%
    assert metrics["num_images"] == 5 and metrics["map50"] == pytest.approx(trained["map50"], abs=1e-6)
    every = json.loads(omnivis("eval", str(out), "--data", str(ann), "--images", str(images), "--labels", str(labels),
                               "--split", "all", "--json").stdout)  # another file (here: all of this one)
    assert every["num_images"] == 24 and {"accuracy", "miou", "map50"} <= set(every)
    results = json.loads(omnivis("predict", str(out), str(images / "000003.png"), "--out", str(tmp_path / "viz"),
                                 "--json").stdout)
    assert results[0]["label"] in ("many", "one") and "boxes:" in results[0]["summary"]
    assert {d["label"] for d in results[0]["detections"]} <= {"ball", "box", "wedge"}
    assert (tmp_path / "viz" / "000003_boxes.png").exists()
    for bad, message in (
        (["--images", str(tmp_path / "nowhere")], "nowhere: images folder not found"),
        (["--labels", str(tmp_path / "none.csv")], "none.csv: labels CSV not found"),
    ):
        run = omnivis("train", "multitask", "--data", str(ann), "--images", str(images), "--labels", str(labels),
                      *bad, "--out", str(tmp_path / "bad"), check=False)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr
    run = omnivis("train", "multitask", "--data", str(ann), "--out", str(tmp_path / "bad2"), check=False)
    assert run.returncode == 2 and "pass --labels CSV" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_two_process_ddp_with_a_head_that_gets_no_labels(tmp_path):
    """No boxes at all: the detection head gets no gradient, which plain DDP rejects at the next step."""
    import json

    from tests.test_cli import omnivis

    out = tmp_path / "ddp"
    args = ["--tasks", "classify,segment,detect", "--img-size", "32", "--train-images", "32", "--val-images", "8",
            "--model", "omnivis_resnet_micro", "--decoder-width", "16", "--det-label-fraction", "0",
            "--batch-size", "8", "--max-steps", "3", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
            "--no-progress"]
    trained = json.loads(omnivis("train", "multitask", *args, "--out", str(out), "--json").stdout)
    assert trained["labelled_boxes"] == 0 and (out / "model.safetensors").exists()
