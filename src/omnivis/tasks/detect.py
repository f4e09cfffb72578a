"""Object detection and instance segmentation: config, LightningModule, training, evaluation, prediction.

The model is a torchvision detector (FCOS by default; Faster R-CNN, RetinaNet, Mask R-CNN) on any
omnivis backbone through an FPN (``omnivis.models.detection``). Instance segmentation is the same
task with ``arch="maskrcnn"`` on data with masks. The bundle's ``config.json`` carries the classes,
COCO category ids, image size and mean/std, so ``DetectPredictor`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from omnivis.config import config_to_dict
from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.cache import cache_datasets, workers_line
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.decode import decode_tensor
from omnivis.data.detection import (
    DetectionDataset,
    build_detection_transform,
    detection_collate,
    resolve_detection_data,
)
from omnivis.data.detection_records import DetectionData
from omnivis.data.profile import (
    FLIP_SAMPLE,
    detection_size_for,
    flip_check,
    profile_images,
    region_crops,
    sample_indices,
)
from omnivis.data.splits import split_indices
from omnivis.data.transforms import default_mean_std
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.detect import TASK, evaluate_detector
from omnivis.metrics.detection import new_map_metric
from omnivis.models.backbones import create_backbone
from omnivis.models.detection import ARCHS, build_detector
from omnivis.tasks.budget import DENSE_EPOCHS, DENSE_STEPS
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.run import TrainingPlan, run_training


@dataclass(kw_only=True)
class DetectConfig:
    """Everything that defines a detection (or, with ``arch="maskrcnn"``, instance-segmentation) run.

    Attributes:
        data: ``builtin:shapes`` or a COCO JSON file.
        images: the COCO images folder (default: the JSON's folder).
        val_fraction: held-out fraction of a COCO file (seeded by ``trainer.seed``); builtin:shapes
            holds out nothing: its test scenes come from another seed.
        strict: a bad COCO record is an error instead of being skipped with a warning.
        model: any timm name or omnivis preset (the FPN reads its multi-scale features).
        img_size: images are resized to this square size (the detector never rescales further);
            default: from the data (the images' native size, kept large enough for small objects).
        channels: must be 3 (detectors take RGB).
        arch: ``fcos`` (default: the best mAP per CPU minute), ``fasterrcnn``, ``retinanet``,
            ``maskrcnn`` (boxes and instance masks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        grad_clip: clip the gradient norm to this value (0: off).
        num_train: ``builtin:shapes`` training scenes (drawn from seed 0).
        num_test: ``builtin:shapes`` test scenes (drawn from seed 1, so training never sees them).
        score_threshold: lowest score ``predict`` reports (evaluation keeps everything >= 0.05).
        fpn_channels: width of the pyramid and the heads (a multiple of 32, >= 64).
        hflip: random horizontal flips; default: on unless a held-out check on the training
            objects says mirroring changes their class.
        scale_min: smallest area of the random crop, e.g. 0.8 (scale jitter; boxes and masks follow,
            objects cut out are dropped; 1: off).
        photometric: random brightness, contrast, saturation and hue.
        trainer: engine settings (epochs, devices, precision, checkpoints ...); by default the
            number of steps follows the data's size.
    """

    data: str = "builtin:shapes"
    images: str | None = None
    val_fraction: float = 0.2
    strict: bool = False
    model: str = "omnivis_resnet_tiny"
    img_size: int | None = None
    channels: int = 3
    arch: str = "fcos"
    init_from: str | None = None
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    grad_clip: float = 10.0
    num_train: int = 1200
    num_test: int = 200
    score_threshold: float = 0.5
    fpn_channels: int = 64
    hflip: bool | None = None
    scale_min: float = 1.0
    photometric: bool = False
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown detector arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.channels != 3:
            raise ConfigError(f"detection takes RGB images: channels must be 3, got {self.channels}")
        if self.img_size is not None and self.img_size < 32:
            raise ConfigError(f"img_size must be >= 32 for detection, got {self.img_size}")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("batch_size must be >= 1, lr > 0, weight_decay and grad_clip >= 0")
        if self.num_train < 1 or self.num_test < 1:
            raise ConfigError("num_train and num_test must be >= 1")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.scale_min <= 1.0:
            raise ConfigError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if self.fpn_channels < 64 or self.fpn_channels % 32:
            raise ConfigError(f"fpn_channels must be a multiple of 32 and >= 64 (FCOS's head uses 32-group GroupNorm), got {self.fpn_channels}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def masks(self) -> bool:
        return self.arch == "maskrcnn"


def build_model(config: DetectConfig, num_classes: int, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> torch.nn.Module:
    """The detector for a config whose ``img_size`` is set (``detect_plan`` reads it off the data);
    ``mean``/``std`` default to ImageNet's."""
    if config.img_size is None:
        raise ConfigError("build_model needs img_size; detect_plan chooses it from the data")
    backbone = create_backbone(config.model, in_chans=3, pretrained=config.init_from, img_size=config.img_size)
    default_mean, default_std = default_mean_std(3)
    return build_detector(config.arch, backbone, num_classes, config.img_size, tuple(mean or default_mean),
                          tuple(std or default_std), config.fpn_channels)


def model_targets(targets: Sequence[dict], masks: bool) -> list[dict]:
    """Dataset targets (class indices, tv_tensors) -> what torchvision detectors take (labels + 1)."""
    out = []
    for t in targets:
        item = {"boxes": t["boxes"].as_subclass(torch.Tensor).float(), "labels": t["labels"] + 1}
        if masks:
            item["masks"] = t["masks"].as_subclass(torch.Tensor)
        out.append(item)
    return out


class DetectModule(pl.LightningModule):
    """Trains a torchvision detector on its own summed losses; validates with COCO mAP (boxes)."""

    def __init__(self, config: DetectConfig, classes: Sequence[str], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.model = build_model(config, len(self.classes), mean, std)
        self.val_map = new_map_metric(masks=False)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, model_targets(targets, self.config.masks))
        loss = sum(losses.values())
        log_training(self, {**{f"train/{name}": value for name, value in losses.items()}, "train/loss": loss},
                     batch_size=len(images))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        preds = self.model(images)
        self.val_map.update(
            [{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds],
            [{k: v for k, v in t.items() if k in ("boxes", "labels")} for t in model_targets(targets, False)],
        )

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.log("val/map", result["map"].float(), prog_bar=True)
        self.log("val/map50", result["map_50"].float(), prog_bar=True)
        self.val_map.reset()

    def configure_optimizers(self) -> dict:
        return warmup_cosine_for(self, self.model, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


SHAPES_SIZE = 64  # builtin:shapes scenes are drawn at the img_size asked for; this when none is


def load_splits(config: DetectConfig) -> tuple[DetectionData, DetectionData | None, dict]:
    """(train, held-out or None, the split as recorded in the bundle)."""
    common = {"num_train": config.num_train, "num_test": config.num_test, "img_size": config.img_size or SHAPES_SIZE,
                  "strict": config.strict}
    if is_builtin_shapes(config.data):
        train = resolve_detection_data(config.data, split="train", **common)
        test = resolve_detection_data(config.data, split="test", **common)
        return train, test, {"kind": "shapes", "train_seed": 0, "test_seed": 1, "num_train": config.num_train,
                             "num_test": config.num_test}
    data = resolve_detection_data(config.data, config.images, **common)
    train_idx, val_idx = split_indices(len(data.records), config.val_fraction, config.trainer.seed, method="permutation")
    split = {"kind": "fraction", "val_fraction": config.val_fraction, "seed": config.trainer.seed,
             "train_size": len(train_idx)}
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None), split


def object_crops(data: DetectionData, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """Crops of the labelled objects in a seeded sample of the images, with their classes."""
    crops: list[torch.Tensor] = []
    labels: list[int] = []
    for i in sample_indices(len(data.records), FLIP_SAMPLE // 4, seed):
        record = data.records[int(i)]
        image = decode_tensor(record.source, "RGB")
        for crop, label in zip(region_crops(image, record.boxes), record.labels):
            crops.append(crop)
            labels.append(int(label))
    return crops, labels


def resolve_from_data(config: DetectConfig, train: DetectionData) -> tuple[DetectConfig, tuple, tuple, list[str]]:
    """``config`` with the input size and flips read off the training images where it left them None,
    the mean/std the detector normalizes with, and one line per choice."""
    seed = config.trainer.seed
    profile = profile_images([r.source for r in train.records], seed=seed)
    choices = []
    img_size, hflip = config.img_size, config.hflip
    if img_size is None:
        sides = np.concatenate([np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1])
                                for r in train.records if len(r.boxes)] or [np.array([float(profile.native_size)])])
        img_size, why = detection_size_for(profile.native_size, float(np.percentile(sides, 10)))
        choices.append(f"img_size {img_size}: {why} (--img-size to choose)")
    if hflip is None:
        check = flip_check(*object_crops(train, seed), seed=seed)
        hflip = check.hflip
        choices.append(f"horizontal flips {'on' if hflip else 'off'}: on {check.images} object crops, "
                       f"{check.reason} (--hflip / --no-hflip)")
    mean, std = profile.stats(3)
    choices.append(profile.stats_line(3))
    return replace(config, img_size=img_size, hflip=hflip), mean, std, choices


def bundle_config(config: DetectConfig, data: DetectionData, split: dict, mean: Sequence[float],
                  std: Sequence[float]) -> dict:
    return {
        "task": TASK,
        "arch": config.arch,
        "backbone": config.model,
        "classes": list(data.classes),
        "category_ids": list(data.category_ids),
        "masks": config.masks,
        "img_size": config.img_size,
        "in_chans": 3,
        "mean": list(mean),
        "std": list(std),
        "fpn_channels": config.fpn_channels,
        "score_threshold": config.score_threshold,
        "data": config.data,
        "images": config.images,
        "split": split,
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
    }


def detect_plan(config: DetectConfig) -> TrainingPlan:
    """The detection run: train and held-out scenes (or a seeded split of a COCO file), mAP50 monitored;
    what the config leaves None is read off the training images (``resolve_from_data``)."""
    train, val, split = load_splits(config)
    if config.masks and not train.has_masks:
        raise DataError(f"{config.data}: arch maskrcnn needs instance masks (COCO segmentations) on every annotation")
    if not train.records:
        raise DataError(f"{config.data}: no training images")
    config, mean, std, choices = resolve_from_data(config, train)
    seed = config.trainer.seed
    train_tf = build_detection_transform(
        config.img_size, train=True, hflip=config.hflip, scale_min=config.scale_min, photometric=config.photometric
    )
    train_set = DetectionDataset(train, train_tf, seed, masks=config.masks)
    val_set = DetectionDataset(val, build_detection_transform(config.img_size, train=False), seed) if val else None
    choices += cache_datasets({"training images": train_set, "held-out images": val_set}, config.trainer.cache_mb,
                              config.trainer.progress)
    datamodule = SeededDataModule(train_set, val_set, batch_size=min(config.batch_size, len(train.records)),
                                  num_workers=config.trainer.num_workers, seed=seed, collate_fn=detection_collate)
    choices.append(workers_line(datamodule.num_workers, config.trainer.num_workers))
    return TrainingPlan(
        command="omnivis train detect",
        datamodule=datamodule,
        build_module=lambda: DetectModule(config, train.classes, mean, std),
        header=bundle_config(config, train, split, mean, std),
        evaluate=(lambda bundle, progress: evaluate_detector(bundle, data=val, out_dir=bundle, progress=progress))
        if val is not None else None,
        monitor="val/map50" if val is not None else None,
        # not every parameter gets a gradient every step (backbone stages the FPN does not read at small
        # sizes; Mask R-CNN's mask head without positive proposals), which plain DDP refuses
        partial_graph=True,
        skipped=train.skipped,
        config=config,
        choices=choices,
        step_range=DENSE_STEPS,
        schedule_epochs=DENSE_EPOCHS,
    )


def train_detector(config: DetectConfig, out: str | Path, resume: bool = False,
                   callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the held-out data and write a bundle into ``out``; returns ``out``. Besides
    what every run keeps (``run_training``), ``out`` holds ``pr_curve.png`` and ``eval_predictions.json``
    (COCO results)."""
    return run_training(detect_plan, config, out, resume, callbacks)
