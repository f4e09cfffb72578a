"""Semantic segmentation: config, LightningModule, training, evaluation and prediction.

The model is any omnivis backbone under an smp decoder (U-Net, FPN or DeepLabV3+, see
``omnivis.models.segmentation``); the backbone can start from any bundle (``init_from``). Data is a
mask folder or ``builtin:shapes`` (train and test scenes drawn from two explicit seeds). The loss is
cross-entropy + Dice, both skipping pixels marked 255. The bundle's ``config.json`` carries the
classes, architecture and preprocessing, so ``SegmentPredictor`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from omnivis.config import config_to_dict
from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.cache import cache_datasets, workers_line
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.decode import decode_tensor
from omnivis.data.masks import (
    BACKGROUND,
    IGNORE_INDEX,
    MaskAugment,
    SegmentationData,
    SegmentationDataset,
    build_mask_transform,
    load_shapes_segmentation,
    read_mask,
    resolve_segmentation_data,
)
from omnivis.data.profile import (
    FLIP_SAMPLE,
    flip_check,
    profile_images,
    region_crops,
    sample_indices,
    size_for,
)
from omnivis.data.splits import split_indices
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.segment import TASK, evaluate_segmenter
from omnivis.metrics.segmentation import confusion_to_metrics, pixel_confusion
from omnivis.models.backbones import create_backbone
from omnivis.models.segmentation import (
    ARCHS,
    SIZE_MULTIPLE,
    SegmentationModel,
    segmentation_loss,
)
from omnivis.tasks.budget import DENSE_EPOCHS, DENSE_STEPS
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.run import TrainingPlan, run_training


@dataclass(kw_only=True)
class SegmentConfig:
    """Everything that defines a semantic-segmentation run.

    Attributes:
        data: a mask folder (``images/``, ``masks/``, optional ``classes.txt``) or ``builtin:shapes``.
        strict: a bad image/mask pair is an error instead of being skipped with a warning.
        val_fraction: held-out fraction of a mask folder (fixed by ``trainer.seed``).
        train_images: ``builtin:shapes`` only: how many scenes to train on.
        val_images: ``builtin:shapes`` only: how many scenes to validate on.
        train_seed: ``builtin:shapes`` only: the seed that draws the training scenes.
        val_seed: ``builtin:shapes`` only: the seed that draws the validation scenes (keep it
            different from ``train_seed``: the validation scenes are then new pictures, not copies).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size; a multiple of 32 (the deepest backbone stride); default: the
            images' native size rounded up to a multiple of 32, within [32, 256].
        channels: 3 (RGB) or 1 (grayscale); default: 1 when every sampled training image is grey.
        arch: decoder: ``unet``, ``fpn`` or ``deeplabv3plus``.
        decoder_width: decoder size (channels of its middle blocks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        dice_weight: weight of the Dice loss added to cross-entropy (0: cross-entropy only).
        augment: joint image/mask augmentation.
        trainer: engine settings (epochs, devices, precision, checkpoints ...); by default the
            number of steps follows the data's size.
    """

    data: str = "builtin:shapes"
    strict: bool = False
    val_fraction: float = 0.2
    train_images: int = 600
    val_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    model: str = "omnivis_resnet_tiny"
    img_size: int | None = None
    channels: int | None = None
    arch: str = "fpn"
    decoder_width: int = 64
    init_from: str | None = None
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    dice_weight: float = 1.0
    augment: MaskAugment = field(default_factory=MaskAugment)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size is not None and (self.img_size < SIZE_MULTIPLE or self.img_size % SIZE_MULTIPLE):
            raise ConfigError(f"img_size must be a multiple of {SIZE_MULTIPLE} (the deepest stride), got {self.img_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.lr <= 0 or self.decoder_width < 8:
            raise ConfigError("batch_size must be >= 1, lr > 0 and decoder_width >= 8")
        if self.train_images < 1 or self.val_images < 0 or self.dice_weight < 0:
            raise ConfigError("train_images must be >= 1, val_images >= 0 and dice_weight >= 0")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


def build_model(config: SegmentConfig, num_classes: int, pretrained: str | None = None) -> SegmentationModel:
    backbone = create_backbone(config.model, in_chans=config.channels, pretrained=pretrained, img_size=config.img_size)
    return SegmentationModel(backbone, num_classes, arch=config.arch, decoder_width=config.decoder_width)


class SegmentModule(pl.LightningModule):
    """Trains a SegmentationModel; logs val/loss and val/miou (from a pixel confusion matrix)."""

    def __init__(self, config: SegmentConfig, classes: Sequence[str]) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.model = build_model(config, len(self.classes), pretrained=config.init_from)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)
        self.val_confusion = pixel_confusion(len(self.classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = segmentation_loss(self.model(images), masks, self.dice, self.config.dice_weight)
        log_training(self, {"train/loss": loss})
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks = batch
        logits = self.model(images)
        self.log("val/loss", F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX), prog_bar=True, sync_dist=True)
        self.val_confusion.update(logits.argmax(dim=1).reshape(-1), masks.reshape(-1))

    def on_validation_epoch_end(self) -> None:
        values = confusion_to_metrics(self.val_confusion.compute())
        self.log("val/miou", values["miou"].nan_to_num(0.0), prog_bar=True)
        self.log("val/pixel_accuracy", values["pixel_accuracy"])
        self.val_confusion.reset()

    def configure_optimizers(self) -> dict:
        return warmup_cosine_for(self, self.model, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


SHAPES_SIZE = 64  # builtin:shapes scenes are drawn at the img_size asked for; this when none is
MAX_SEGMENT_SIZE = 256


def load_splits(config: SegmentConfig) -> tuple[SegmentationData, SegmentationData | None]:
    """(train, val) data: two seeds for ``builtin:shapes``, a seeded split of a mask folder."""
    if is_builtin_shapes(config.data):
        size = config.img_size or SHAPES_SIZE
        train = load_shapes_segmentation(config.train_images, size, config.train_seed)
        val = load_shapes_segmentation(config.val_images, size, config.val_seed) if config.val_images else None
        return train, val
    data = resolve_segmentation_data(config.data, strict=config.strict)
    if config.val_fraction == 0:
        return data, None
    train_idx, val_idx = split_indices(len(data), config.val_fraction, seed=config.trainer.seed)
    return data.subset(train_idx), data.subset(val_idx)


def bundle_config(config: SegmentConfig, classes: Sequence[str], train_size: int, mean: Sequence[float],
                  std: Sequence[float]) -> dict:
    return {
        "task": TASK,
        "backbone": config.model,
        "arch": config.arch,
        "decoder_width": config.decoder_width,
        "classes": list(classes),
        "img_size": config.img_size,
        "in_chans": config.channels,
        "mean": list(mean),
        "std": list(std),
        "data": config.data,
        "split": {
            "val_fraction": config.val_fraction, "seed": config.trainer.seed, "train_size": train_size,
            "train_seed": config.train_seed, "val_seed": config.val_seed, "val_images": config.val_images,
        },
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
    }


def make_datamodule(config: SegmentConfig, train: SegmentationData, val: SegmentationData | None,
                    mean: Sequence[float], std: Sequence[float]) -> tuple[SeededDataModule, list[str]]:
    """The seeded loaders, their images decoded once into memory when they fit; the lines that say so."""
    seed = config.trainer.seed
    train_set = SegmentationDataset(train, build_mask_transform(config.img_size, mean, std, config.augment),
                                    config.mode, seed)
    val_set = (SegmentationDataset(val, build_mask_transform(config.img_size, mean, std, None), config.mode, seed)
               if val is not None and len(val) else None)
    lines = cache_datasets({"training images": train_set, "held-out images": val_set}, config.trainer.cache_mb,
                           config.trainer.progress)
    datamodule = SeededDataModule(train_set, val_set, batch_size=min(config.batch_size, len(train)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    return datamodule, [*lines, workers_line(datamodule.num_workers, config.trainer.num_workers)]


def class_region_crops(data: SegmentationData, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """For a seeded sample of the images: the bounding box of each class's pixels (background and
    ignored pixels left out) cropped from the image, with that class."""
    crops: list[torch.Tensor] = []
    labels: list[int] = []
    for i in sample_indices(len(data), FLIP_SAMPLE // 4, seed):
        sample = data.samples[int(i)]
        image = decode_tensor(sample.image, "RGB")
        mask = sample.mask if isinstance(sample.mask, np.ndarray) else read_mask(sample.mask)
        if mask.shape != tuple(image.shape[1:]):
            continue
        present = [int(c) for c in np.unique(mask) if 0 < c < len(data.classes) and data.classes[c] != BACKGROUND]
        for c in present:
            ys, xs = np.nonzero(mask == c)
            for crop in region_crops(image, np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])):
                crops.append(crop)
                labels.append(c)
    return crops, labels


def resolve_from_data(config: SegmentConfig, train: SegmentationData) -> tuple[SegmentConfig, tuple, tuple, list[str]]:
    """``config`` with channels, size and flips read off the training images where it left them None,
    the mean/std to normalize with, and one line per choice."""
    seed = config.trainer.seed
    profile = profile_images([s.image for s in train.samples], seed=seed)
    choices = []
    channels, img_size, hflip = config.channels, config.img_size, config.augment.hflip
    if channels is None:
        channels = profile.channels
        choices.append(profile.channels_line())
    if img_size is None:
        img_size = size_for(profile.native_size, step=SIZE_MULTIPLE, high=MAX_SEGMENT_SIZE)
        choices.append(f"img_size {img_size}: the images' median shorter side is {profile.native_size} px, rounded "
                       f"up to a multiple of {SIZE_MULTIPLE} within [{SIZE_MULTIPLE}, {MAX_SEGMENT_SIZE}] "
                       "(--img-size to choose)")
    if hflip is None:
        check = flip_check(*class_region_crops(train, seed), seed=seed)
        hflip = check.hflip
        choices.append(f"horizontal flips {'on' if hflip else 'off'}: on {check.images} class regions, "
                       f"{check.reason} (--hflip / --no-hflip)")
    mean, std = profile.stats(channels)
    choices.append(profile.stats_line(channels))
    resolved = replace(config, channels=channels, img_size=img_size, augment=replace(config.augment, hflip=hflip))
    return resolved, mean, std, choices


def segment_plan(config: SegmentConfig) -> TrainingPlan:
    """The segmentation run: train and validation scenes (or a seeded split of a mask folder), mIoU
    monitored; what the config leaves None is read off the training images (``resolve_from_data``)."""
    train, val = load_splits(config)
    if len(train.classes) < 2:
        raise DataError(f"{config.data}: segmentation needs at least 2 classes, found {len(train.classes)}")
    has_val = val is not None and len(val) > 0
    config, mean, std, choices = resolve_from_data(config, train)
    datamodule, loading = make_datamodule(config, train, val, mean, std)
    return TrainingPlan(
        command="omnivis train segment",
        datamodule=datamodule,
        build_module=lambda: SegmentModule(config, train.classes),
        header=bundle_config(config, train.classes, len(train), mean, std),
        evaluate=(lambda bundle, progress: evaluate_segmenter(bundle, data=val, out_dir=bundle, progress=progress))
        if has_val else None,
        summary_keys=("miou", "dice", "pixel_accuracy", "num_images"),
        monitor="val/miou" if has_val else None,
        loss_monitor="val/loss",
        skipped=train.skipped,
        config=config,
        choices=[*choices, *loading],
        step_range=DENSE_STEPS,
        schedule_epochs=DENSE_EPOCHS,
    )


def train_segmenter(config: SegmentConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the validation data and write a bundle into ``out``; returns ``out``. Besides
    what every run keeps (``run_training``), ``out`` holds the per-class IoU plot."""
    return run_training(segment_plan, config, out, resume, callbacks)
