"""Semantic segmentation: config, LightningModule, training, evaluation and prediction.

The model is any omnivis backbone under an smp decoder (U-Net, FPN or DeepLabV3+, see
``omnivis.models.segmentation``); the backbone can start from any bundle (``init_from``). Data is a
mask folder or ``builtin:shapes`` (train and test scenes drawn from two explicit seeds). The loss is
cross-entropy + Dice, both skipping pixels marked 255. The bundle's ``config.json`` carries the
classes, architecture and preprocessing, so ``SegmentPredictor`` needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from omnivis.config import config_to_dict
from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.masks import (
    IGNORE_INDEX,
    MaskAugment,
    SegmentationData,
    SegmentationDataset,
    build_mask_transform,
    load_shapes_segmentation,
    resolve_segmentation_data,
)
from omnivis.data.splits import split_indices
from omnivis.data.transforms import default_mean_std
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
        img_size: square input size; a multiple of 32 (the deepest backbone stride).
        channels: 3 (RGB) or 1 (grayscale).
        arch: decoder: ``unet``, ``fpn`` or ``deeplabv3plus``.
        decoder_width: decoder size (channels of its middle blocks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        dice_weight: weight of the Dice loss added to cross-entropy (0: cross-entropy only).
        augment: joint image/mask augmentation.
        trainer: engine settings (epochs, devices, precision, checkpoints ...); 60 epochs (the
            recipe of BENCHMARKS.md (f): about 3 minutes on 2 CPU cores at 64 px).
    """

    data: str = "builtin:shapes"
    strict: bool = False
    val_fraction: float = 0.2
    train_images: int = 600
    val_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    model: str = "omnivis_resnet_tiny"
    img_size: int = 64
    channels: int = 3
    arch: str = "fpn"
    decoder_width: int = 64
    init_from: str | None = None
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    dice_weight: float = 1.0
    augment: MaskAugment = field(default_factory=MaskAugment)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=60))

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size < SIZE_MULTIPLE or self.img_size % SIZE_MULTIPLE:
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


def load_splits(config: SegmentConfig) -> tuple[SegmentationData, SegmentationData | None]:
    """(train, val) data: two seeds for ``builtin:shapes``, a seeded split of a mask folder."""
    if is_builtin_shapes(config.data):
        train = load_shapes_segmentation(config.train_images, config.img_size, config.train_seed)
        val = load_shapes_segmentation(config.val_images, config.img_size, config.val_seed) if config.val_images else None
        return train, val
    data = resolve_segmentation_data(config.data, strict=config.strict)
    if config.val_fraction == 0:
        return data, None
    train_idx, val_idx = split_indices(len(data), config.val_fraction, seed=config.trainer.seed)
    return data.subset(train_idx), data.subset(val_idx)


def bundle_config(config: SegmentConfig, classes: Sequence[str], train_size: int) -> dict:
    mean, std = default_mean_std(config.channels)
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


def make_datamodule(config: SegmentConfig, train: SegmentationData, val: SegmentationData | None) -> SeededDataModule:
    mean, std = default_mean_std(config.channels)
    seed = config.trainer.seed
    train_tf = build_mask_transform(config.img_size, mean, std, config.augment)
    eval_tf = build_mask_transform(config.img_size, mean, std, None)
    return SeededDataModule(
        SegmentationDataset(train, train_tf, config.mode, seed),
        SegmentationDataset(val, eval_tf, config.mode, seed) if val is not None and len(val) else None,
        batch_size=min(config.batch_size, len(train)),
        num_workers=config.trainer.num_workers,
        seed=seed,
    )


def segment_plan(config: SegmentConfig) -> TrainingPlan:
    """The segmentation run: train and validation scenes (or a seeded split of a mask folder), mIoU monitored."""
    train, val = load_splits(config)
    if len(train.classes) < 2:
        raise DataError(f"{config.data}: segmentation needs at least 2 classes, found {len(train.classes)}")
    has_val = val is not None and len(val) > 0
    return TrainingPlan(
        command="omnivis train segment",
        datamodule=make_datamodule(config, train, val),
        build_module=lambda: SegmentModule(config, train.classes),
        header=bundle_config(config, train.classes, len(train)),
        evaluate=(lambda bundle, progress: evaluate_segmenter(bundle, data=val, out_dir=bundle, progress=progress))
        if has_val else None,
        summary_keys=("miou", "dice", "pixel_accuracy", "num_images"),
        monitor="val/miou" if has_val else None,
        skipped=train.skipped,
    )


def train_segmenter(config: SegmentConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the validation data and write a bundle into ``out``; returns ``out``. Besides
    what every run keeps (``run_training``), ``out`` holds the per-class IoU plot."""
    return run_training(segment_plan, config, out, resume, callbacks)
