"""Image classification: config, LightningModule, training, evaluation and prediction.

The model is any backbone plus a linear head (``ImageClassifier``); the backbone can start from a
pretrained bundle (``init_from``). Training runs on the shared engine; the result is a bundle whose
``config.json`` carries classes and preprocessing, so ``ClassifyPredictor`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torchmetrics.classification import MulticlassAccuracy

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.poisson import poisson_datamodule
from omnivis.data.transforms import (
    AugmentConfig,
    build_batch_mix,
)
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.classify import TASK, class_split, evaluate_classifier
from omnivis.models.backbones import create_backbone
from omnivis.models.heads import ImageClassifier
from omnivis.models.private import dp_compatible
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.labelled_images import labelled_image_datamodule, resolve_from_data
from omnivis.tasks.private import CHECKPOINT_KEY, PrivateTraining, check_budget, resolve_delta
from omnivis.tasks.run import TrainingPlan, run_training


@dataclass(kw_only=True)
class ClassifyConfig:
    """Everything that defines a classification run.

    Attributes:
        data: a class-folder path, ``builtin:NAME`` or ``torchvision:NAME:ROOT``.
        manifest: optional CSV (``path,label``) listing the images instead of class folders.
        strict: unreadable images are an error instead of being skipped with a warning.
        val_fraction: held-out fraction (stratified, fixed by ``trainer.seed``; 0: no held-out split).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size in pixels (None: read off the data, ``data/profile.py``: the
            images' median shorter side rounded up to a multiple of 8, within [32, 128]).
        channels: 3 (RGB) or 1 (grayscale); images are converted to match (None: 1 when every
            sampled training image is grey, else 3).
        init_from: a bundle or safetensors file to initialize the backbone from.
        freeze_backbone: train only the head (the backbone stays in eval mode, batch-norm included).
        unfreeze_after: with ``freeze_backbone``, train the whole model from this epoch on (0: never).
        layer_decay: layer-wise learning-rate decay (< 1 gives earlier layers smaller rates; the
            usual fine-tuning recipe for ViTs, via timm's ``param_groups_layer_decay``).
        batch_size: images per step on each device (capped at the training-set size; the last
            incomplete batch of an epoch is dropped).
        lr: peak AdamW learning rate: linear warmup, then cosine decay to 0, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        label_smoothing: cross-entropy label smoothing.
        dropout: dropout before the linear head.
        drop_path: stochastic-depth rate of the backbone (timm's ``drop_path_rate``; 0: off).
        output_stride: 8, 16 or 32: the CNN's last stages keep that stride (dilated convolutions,
            timm's ``output_stride``; same weights, more compute) so small images keep a map to
            explain: at 64 px the default ResNet's last map is 2 x 2 cells, with 8 it is 8 x 8 (None:
            the model's own, 32 for ResNets). Recorded in the bundle; CNNs only.
        augment: training augmentation.
        dp_epsilon: train with differential privacy (DP-SGD, Opacus) spending at most this epsilon
            over the whole schedule (None: not private). Batch-norm becomes group-norm, batches are
            Poisson-sampled, each image's gradient is clipped and noise calibrated to reach the
            target; the spent epsilon is logged every epoch and kept in the bundle. One device;
            no Mixup/CutMix.
        dp_delta: the privacy delta (None: 1e-5, or 1/(10 N) for more than 10,000 training
            images); must be below 1/N.
        dp_max_grad_norm: the L2 norm each image's gradient is clipped to under ``dp_epsilon``.
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    data: str = "builtin:digits"
    manifest: str | None = None
    strict: bool = False
    val_fraction: float = 0.2
    model: str = "omnivis_resnet_tiny"
    img_size: int | None = None
    channels: int | None = None
    init_from: str | None = None
    freeze_backbone: bool = False
    unfreeze_after: int = 0
    layer_decay: float = 1.0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    dropout: float = 0.0
    drop_path: float = 0.0
    output_stride: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size is not None and self.img_size < 8:
            raise ConfigError(f"img_size must be >= 8, got {self.img_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 1 and lr > 0")
        if self.output_stride not in (None, 8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {self.output_stride}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.unfreeze_after < 0 or (self.unfreeze_after and not self.freeze_backbone):
            raise ConfigError("unfreeze_after needs freeze_backbone and must be >= 0")
        if self.dp_epsilon is not None and self.dp_epsilon <= 0 or self.dp_max_grad_norm <= 0:
            raise ConfigError(f"dp_epsilon must be > 0 (got {self.dp_epsilon}) and dp_max_grad_norm > 0 "
                              f"(got {self.dp_max_grad_norm})")
        if self.dp_epsilon is not None and (self.augment.mixup or self.augment.cutmix):
            raise ConfigError("--dp-epsilon clips each image's gradient, and Mixup/CutMix blend images of a batch "
                              "into one another's; drop --mixup/--cutmix (or --dp-epsilon)")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


def build_model(config: ClassifyConfig, num_classes: int) -> ImageClassifier:
    backbone = create_backbone(
        config.model, in_chans=config.channels, pretrained=config.init_from, img_size=config.img_size,
        drop_path_rate=config.drop_path, output_stride=config.output_stride,
    )
    model = ImageClassifier(backbone, num_classes, dropout=config.dropout)
    return dp_compatible(model) if config.dp_epsilon is not None else model


class ClassifyModule(pl.LightningModule):
    """Cross-entropy training (with label smoothing and optional Mixup/CutMix) of an ImageClassifier."""

    def __init__(self, config: ClassifyConfig, classes: Sequence[str], train_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.model = build_model(config, len(self.classes))
        self.privacy = None if config.dp_epsilon is None else PrivateTraining(
            self.model, epsilon=config.dp_epsilon, delta=config.dp_delta, max_grad_norm=config.dp_max_grad_norm,
            batch_size=config.batch_size, train_size=train_size)
        self.batch_mix = build_batch_mix(config.augment, len(self.classes))
        self.val_accuracy = MulticlassAccuracy(num_classes=len(self.classes), average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def backbone_frozen(self, epoch: int) -> bool:
        """Frozen is a function of the epoch, so a resumed run freezes exactly as the original did."""
        return self.config.freeze_backbone and not (self.config.unfreeze_after and epoch >= self.config.unfreeze_after)

    def on_train_epoch_start(self) -> None:
        frozen = self.backbone_frozen(self.current_epoch)
        self.model.backbone.requires_grad_(not frozen)
        self.model.backbone.train(not frozen)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.batch_mix is not None:
            images, labels = self.batch_mix(images, labels)
        if self.privacy is not None:
            loss = self.privacy.loss(images, labels, self.config.label_smoothing)
        else:
            loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.config.label_smoothing)
        log_training(self, {"train/loss": loss}, batch_size=max(1, len(labels)))
        return loss

    def on_train_epoch_end(self) -> None:
        if self.privacy is not None:
            self.log("train/dp_epsilon", self.privacy.spent(), prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.privacy is not None:
            checkpoint[CHECKPOINT_KEY] = self.privacy.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.privacy is not None:
            self.privacy.load_state_dict(checkpoint.get(CHECKPOINT_KEY), int(checkpoint.get("global_step", 0)))

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True)
        self.val_accuracy(logits, labels)
        self.log("val/accuracy", self.val_accuracy, prog_bar=True)

    def configure_optimizers(self) -> dict:
        groups = None
        if self.config.layer_decay < 1.0:
            groups = param_groups_layer_decay(
                self.model.backbone.model, weight_decay=self.config.weight_decay, layer_decay=self.config.layer_decay
            )
            head = list(self.model.head.parameters())
            groups.append({"params": [p for p in head if p.ndim > 1], "weight_decay": self.config.weight_decay})
            groups.append({"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0})
        optimizers = warmup_cosine_for(self, self.model, self.config.lr, self.config.weight_decay,
                                       self.config.warmup_epochs, param_groups=groups)
        if self.privacy is not None:
            return self.privacy.wrap(optimizers, self.trainer.estimated_stepping_batches, self.trainer.world_size)
        return optimizers


def bundle_config(config: ClassifyConfig, classes: Sequence[str], train_size: int,
                  mean: Sequence[float], std: Sequence[float]) -> dict:
    return {
        "task": TASK,
        "backbone": config.model,
        "classes": list(classes),
        "img_size": config.img_size,
        "in_chans": config.channels,
        **({"output_stride": config.output_stride} if config.output_stride else {}),
        "mean": list(mean),
        "std": list(std),
        "data": config.data,
        "manifest": config.manifest,
        "split": {"val_fraction": config.val_fraction, "seed": config.trainer.seed, "train_size": train_size},
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
        **({"batchnorm_to_groupnorm": True, "dp": {}} if config.dp_epsilon is not None else {}),
    }


def classify_plan(config: ClassifyConfig, stats: tuple[Sequence[float], Sequence[float]] | None = None) -> TrainingPlan:
    """The classification run: a stratified seeded split, the augmented train set, accuracy monitored;
    what the config leaves None is read off the training images (``resolve_from_data``)."""
    data = resolve_classification_data(config.data, manifest=config.manifest, strict=config.strict)
    if len(data.classes) < 2:
        raise DataError(f"{config.data}: classification needs at least 2 classes, found {len(data.classes)}")
    train_idx, val_idx = class_split(data, config.val_fraction, config.trainer.seed)
    train = data.subset(train_idx)
    config, (mean, std), choices = resolve_from_data(config, train, stats)
    private = config.dp_epsilon is not None
    if private:
        config, line = resolve_delta(config, len(train))
        choices += [line] if line else []
    held_out = data.subset(val_idx) if len(val_idx) else None
    datamodule, lines = labelled_image_datamodule(config, train, held_out, mean, std)
    choices += lines
    header = bundle_config(config, data.classes, len(train_idx), mean, std)
    return TrainingPlan(
        command="omnivis train classify",
        datamodule=poisson_datamodule(datamodule) if private else datamodule,
        build_module=lambda: ClassifyModule(config, data.classes, len(train_idx)),
        header=header,
        check=(lambda resolved: check_budget(resolved, len(train_idx))) if private else None,
        finish=(lambda module, trainer: privacy_spent(module, header)) if private else None,
        evaluate=(lambda bundle, progress: evaluate_classifier(bundle, data=held_out, out_dir=bundle, progress=progress))
        if held_out else None,
        summary_keys=SUMMARY_KEYS,
        monitor="val/accuracy" if held_out else None,
        loss_monitor="val/loss",
        skipped=data.skipped,
        config=config,
        choices=choices,
    )


def privacy_spent(module: ClassifyModule, header: dict) -> dict:
    """After a private run: the accountant's record into the header's ``dp`` (written with the bundle
    right after this) and the same numbers, prefixed ``dp_``, for ``metrics.json``."""
    header["dp"] = module.privacy.record()
    numbers = {key: value for key, value in header["dp"].items() if type(value) in (int, float)}  # not the flags
    return {f"dp_{key}": value for key, value in numbers.items()}


def train_classifier(config: ClassifyConfig, out: str | Path, resume: bool = False,
                     callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the held-out split and write a bundle into ``out``; returns ``out``
    (see ``run_training`` for what else the folder keeps)."""
    return run_training(classify_plan, config, out, resume, callbacks)


SUMMARY_KEYS = ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1", "num_samples")
