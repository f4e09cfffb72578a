"""Multi-task learning: one backbone; classification, segmentation and detection heads; one bundle.

Data is ``builtin:shapes`` (every scene has a class label, its most visible shape; a class mask,
background + shapes; and boxes, one per shape) or a COCO file (boxes, instance masks painted into a
class mask) with an optional ``path,label`` CSV of image-level classes; a seeded ``val_fraction`` of
a file is held out. ``tasks`` picks the heads (any non-empty subset of
classify, segment, detect). To model datasets where an image carries only some label types,
``cls_label_fraction`` / ``seg_label_fraction`` / ``det_label_fraction`` keep that kind of label for
a seeded fraction of the training images only; a batch's loss for a task uses only the images that
have its label. Task losses are combined with fixed weights or learned uncertainty weighting
(Kendall et al. 2018: ``sum_i exp(-s_i) L_i + s_i``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torchmetrics.classification import MulticlassAccuracy

from omnivis.config import config_to_dict
from omnivis.data.builtin import SHAPE_CLASSES, is_builtin_shapes
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.masks import (
    BACKGROUND,
    IGNORE_INDEX,
    MaskAugment,
    build_mask_transform,
)
from omnivis.data.multitask import (  # noqa: F401  (re-exported: the task's data API)
    MultitaskData,
    MultitaskDataset,
    align_classes,
    drop_labels,
    load_coco_multitask,
    load_shapes_multitask,
    multitask_collate,
)
from omnivis.data.splits import split_indices
from omnivis.data.transforms import default_mean_std
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.multitask import (
    TASK,
    _absolute,
    evaluate_multitask,
    model_from_config,
)
from omnivis.metrics.detection import new_map_metric
from omnivis.metrics.segmentation import confusion_to_metrics, pixel_confusion
from omnivis.models.backbones import create_backbone
from omnivis.models.multitask import (
    DEFAULT_TASKS,
    TASK_NAMES,
    WEIGHTINGS,
    LossWeighting,
    MultiTaskModel,
)
from omnivis.models.segmentation import ARCHS, SIZE_MULTIPLE, segmentation_loss
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.run import TrainingPlan, run_training


def parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """``"classify,segment"`` or a sequence -> the tasks in canonical order (classify, segment, detect).

    Raises:
        ConfigError: an unknown task (naming the close match) or no task at all.
    """
    names = [t.strip().lower() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    for name in names:
        if name not in TASK_NAMES:
            close = difflib.get_close_matches(name, TASK_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(TASK_NAMES)}"
            raise ConfigError(f"unknown task '{name}'{hint}")
    if not names:
        raise ConfigError(f"tasks must name at least one of {', '.join(TASK_NAMES)}")
    return tuple(t for t in TASK_NAMES if t in names)


@dataclass(kw_only=True)
class MultitaskConfig:
    """Everything that defines a multi-task run.

    Attributes:
        data: ``builtin:shapes`` (the one dataset with every label kind built in) or a COCO JSON file.
        images: the COCO images folder (default: the JSON's folder).
        labels: a ``path,label`` CSV of image-level classes for a COCO file (paths relative to
            ``images`` or absolute); required when ``tasks`` has classify.
        val_fraction: held-out fraction of a COCO file (seeded by ``trainer.seed``).
        strict: a bad COCO record, image file or CSV row is an error instead of being skipped.
        tasks: the heads, any non-empty subset of classify, segment, detect (a comma-separated
            string is accepted); stored in canonical order.
        train_images: ``builtin:shapes`` only: how many scenes to train on.
        val_images: ``builtin:shapes`` only: how many scenes to validate on.
        train_seed: ``builtin:shapes`` only: the seed that draws the training scenes.
        val_seed: ``builtin:shapes`` only: the seed that draws the validation scenes.
        seg_label_fraction: fraction of training images that keep their mask (seeded by
            ``trainer.seed``); the others train only the other heads.
        cls_label_fraction: fraction of training images that keep their class label (seeded likewise).
        det_label_fraction: fraction of training images that keep their boxes (seeded likewise).
        weighting: ``fixed`` (``cls_weight``, ``seg_weight``, ``det_weight``) or ``uncertainty`` (learned).
        cls_weight: classification loss weight (``fixed`` weighting).
        seg_weight: segmentation loss weight (``fixed`` weighting).
        det_weight: detection loss weight (``fixed`` weighting).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size; a multiple of 32 (the deepest backbone stride).
        channels: 3 (RGB) or 1 (grayscale).
        arch: segmentation decoder: ``fpn``, ``unet`` or ``deeplabv3plus``.
        decoder_width: segmentation decoder size (channels of its middle blocks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        fpn_channels: width of the detection FPN and FCOS head (a multiple of 32, >= 64, as detect).
        score_threshold: lowest box score ``predict`` reports (evaluation keeps everything >= 0.05).
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        dice_weight: weight of the Dice loss added to the segmentation cross-entropy.
        label_smoothing: label smoothing of the classification cross-entropy.
        augment: joint image/mask/box augmentation.
        trainer: engine settings; 12 epochs.
    """

    data: str = "builtin:shapes"
    images: str | None = None
    labels: str | None = None
    val_fraction: float = 0.2
    strict: bool = False
    tasks: tuple[str, ...] = DEFAULT_TASKS
    train_images: int = 600
    val_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    seg_label_fraction: float = 1.0
    cls_label_fraction: float = 1.0
    det_label_fraction: float = 1.0
    weighting: str = "uncertainty"
    cls_weight: float = 1.0
    seg_weight: float = 1.0
    det_weight: float = 1.0
    model: str = "omnivis_resnet_tiny"
    img_size: int = 64
    channels: int = 3
    arch: str = "fpn"
    decoder_width: int = 64
    fpn_channels: int = 64
    score_threshold: float = 0.5
    init_from: str | None = None
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    dice_weight: float = 1.0
    label_smoothing: float = 0.0
    augment: MaskAugment = field(default_factory=lambda: MaskAugment(hflip=True, scale_min=0.7, color_jitter=0.2))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=12))

    def __post_init__(self) -> None:
        self.tasks = parse_tasks(self.tasks)
        if is_builtin_shapes(self.data):
            if self.images is not None or self.labels is not None:
                raise ConfigError("images and labels apply to a COCO --data file, not builtin:shapes")
        elif not self.data.lower().endswith(".json"):
            raise ConfigError(f"multitask data must be builtin:shapes or a COCO JSON file (--data ann.json "
                              f"--images DIR), got '{self.data}'")
        elif "classify" in self.tasks and self.labels is None:
            raise ConfigError("tasks has classify but a COCO file has no image-level classes: pass --labels CSV "
                              "(path,label) or drop classify from --tasks")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting '{self.weighting}'; choose one of {', '.join(WEIGHTINGS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.img_size < SIZE_MULTIPLE or self.img_size % SIZE_MULTIPLE:
            raise ConfigError(f"img_size must be a multiple of {SIZE_MULTIPLE}, got {self.img_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if "detect" in self.tasks and self.channels != 3:
            raise ConfigError(f"the detect head takes RGB images: channels must be 3, got {self.channels}")
        fractions = {"classify": "cls_label_fraction", "segment": "seg_label_fraction", "detect": "det_label_fraction"}
        for name in fractions.values():
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        used = [fractions[t] for t in self.tasks]
        if all(getattr(self, name) == 0 for name in used):
            raise ConfigError(f"{' and '.join(used)} cannot all be 0: nothing to learn")
        if min(self.cls_weight, self.seg_weight, self.det_weight) < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("cls_weight, seg_weight and det_weight must be >= 0, batch_size >= 1 and lr > 0")
        if self.train_images < 1 or self.val_images < 0:
            raise ConfigError("train_images must be >= 1 and val_images >= 0")
        if self.fpn_channels < 64 or self.fpn_channels % 32:
            raise ConfigError(f"fpn_channels must be a multiple of 32 and >= 64 (FCOS's head uses 32-group GroupNorm), got {self.fpn_channels}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def build_model(config: MultitaskConfig, pretrained: str | None = None, classes: Sequence[str] | None = None,
                det_classes: Sequence[str] | None = None) -> MultiTaskModel:
    """The model for ``config`` with these head classes (None: the shapes classes)."""
    backbone = create_backbone(config.model, in_chans=config.channels, pretrained=pretrained, img_size=config.img_size)
    return model_from_config(bundle_config(config, 0, classes, det_classes), backbone)


def model_targets(targets: Sequence[dict]) -> list[dict]:
    """Dataset box targets (class indices) -> what torchvision's FCOS loss takes (labels + 1, 0 = background)."""
    return [{"boxes": t["boxes"].float(), "labels": t["labels"] + 1} for t in targets]


class MultitaskModule(pl.LightningModule):
    """Each head's loss on the images that carry its label, combined by ``LossWeighting``."""

    def __init__(self, config: MultitaskConfig, classes: Sequence[str] | None = None,
                 det_classes: Sequence[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.tasks = config.tasks
        classes, det_classes = _or_shapes(classes), _or_shapes(det_classes)
        self.model = build_model(config, config.init_from, classes, det_classes)
        weights = {"classify": config.cls_weight, "segment": config.seg_weight, "detect": config.det_weight}
        self.weighting = LossWeighting(self.tasks, config.weighting, weights)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)
        self.val_accuracy = MulticlassAccuracy(num_classes=max(2, len(classes)), average="micro", ignore_index=-1)
        self.val_confusion = pixel_confusion(len(det_classes) + 1)
        self.val_map = new_map_metric() if "detect" in self.tasks else None

    def task_losses(self, out: dict, masks: torch.Tensor, labels: torch.Tensor,
                    targets: list[dict | None]) -> dict[str, torch.Tensor | None]:
        """Per task: its loss over the batch images that have its label, or None when none has."""
        losses: dict[str, torch.Tensor | None] = {t: None for t in self.tasks}
        has_label = labels >= 0
        if "classify" in self.tasks and has_label.any():
            losses["classify"] = F.cross_entropy(out["classify"][has_label], labels[has_label],
                                                 label_smoothing=self.config.label_smoothing)
        has_mask = (masks != IGNORE_INDEX).flatten(1).any(dim=1)
        if "segment" in self.tasks and has_mask.any():
            losses["segment"] = segmentation_loss(out["segment"][has_mask], masks[has_mask], self.dice,
                                                  self.config.dice_weight)
        keep = [i for i, t in enumerate(targets) if t is not None]
        if "detect" in self.tasks and keep:
            parts = self.model.detector.loss(out["detect"], model_targets([targets[i] for i in keep]), keep)
            losses["detect"] = sum(parts.values())
        return losses

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks, labels, targets = batch
        out = self.model(images)
        losses = self.task_losses(out, masks, labels, targets)
        if all(v is None for v in losses.values()):
            # no label of any kind in this batch (possible with small label fractions): a zero loss that
            # still touches every head keeps the step (and DDP's gradient sync) well-formed
            loss = sum(_zero(v) for v in out.values())
        else:
            loss = self.weighting(losses)
        values = {f"train/loss_{task}": value for task, value in losses.items() if value is not None}
        values["train/loss"] = loss
        values.update({f"train/weight_{task}": w for task, w in self.weighting.effective_weights().items()})
        log_training(self, values, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks, labels, targets = batch
        out = self.model(images)
        if "classify" in self.tasks:
            self.val_accuracy(out["classify"], labels)
        if "segment" in self.tasks:
            self.val_confusion.update(out["segment"].argmax(dim=1).reshape(-1), masks.reshape(-1))
        if self.val_map is not None:
            preds = self.model.detector.detections(out["detect"], tuple(images.shape[-2:]))
            pairs = [(p, t) for p, t in zip(preds, targets) if t is not None]
            if pairs:
                self.val_map.update([p for p, _ in pairs], model_targets([t for _, t in pairs]))

    def on_validation_epoch_end(self) -> None:
        values: dict[str, torch.Tensor] = {}
        if "classify" in self.tasks:
            values["val/accuracy"] = self.val_accuracy.compute().nan_to_num(0.0)
            self.val_accuracy.reset()
        if "segment" in self.tasks:
            values["val/miou"] = confusion_to_metrics(self.val_confusion.compute())["miou"].nan_to_num(0.0)
            self.val_confusion.reset()
        if self.val_map is not None:
            result = self.val_map.compute()
            values["val/map"] = result["map"].float().clamp(min=0)
            values["val/map50"] = result["map_50"].float().clamp(min=0)  # -1 (nothing to score) counts as 0
            self.val_map.reset()
        headline = [values[k] for k in ("val/accuracy", "val/miou", "val/map50") if k in values]
        values["val/score"] = torch.stack([v.float().to(self.device) for v in headline]).mean()
        self.log_dict(values, prog_bar=True)

    def configure_optimizers(self) -> dict:
        # the weighting's log-variances train with the model, without weight decay
        return warmup_cosine_for(self, self, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


def _zero(value) -> torch.Tensor:
    """0 * the sum of every tensor in a (nested) model output: a zero that keeps the graph."""
    if isinstance(value, torch.Tensor):
        return value.sum() * 0.0 if value.is_floating_point() else torch.zeros(())
    if isinstance(value, dict):
        return sum((_zero(v) for v in value.values()), torch.zeros(()))
    return torch.zeros(())


def _or_shapes(classes: Sequence[str] | None) -> list[str]:
    """``classes``, or the shapes classes for None (an empty list stays empty: no such head)."""
    return list(SHAPE_CLASSES if classes is None else classes)


def bundle_config(config: MultitaskConfig, train_size: int, classes: Sequence[str] | None = None,
                  det_classes: Sequence[str] | None = None, split: dict | None = None) -> dict:
    """The bundle's config.json: head classes (None: the shapes classes), preprocessing, the data and split."""
    mean, std = default_mean_std(config.channels)
    classes, det_classes = _or_shapes(classes), _or_shapes(det_classes)
    cfg = {
        "task": TASK,
        "tasks": list(config.tasks),
        "backbone": config.model,
        "arch": config.arch,
        "decoder_width": config.decoder_width,
        "classes": classes,
        "seg_classes": [BACKGROUND, *det_classes],
        "img_size": config.img_size,
        "in_chans": config.channels,
        "mean": list(mean),
        "std": list(std),
        "data": config.data if is_builtin_shapes(config.data) else _absolute(config.data),
        "images": _absolute(config.images),
        "labels": _absolute(config.labels),
        "split": split or {"train_seed": config.train_seed, "val_seed": config.val_seed, "train_size": train_size,
                           "val_images": config.val_images},
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
    }
    if "detect" in config.tasks:
        cfg.update({"det_classes": det_classes, "fpn_channels": config.fpn_channels,
                    "score_threshold": config.score_threshold})
    return cfg


def load_splits(config: MultitaskConfig) -> tuple[MultitaskData, MultitaskData | None, dict | None]:
    """(training data, held-out data or None, the split for the bundle: None means the shapes seeds)."""
    if is_builtin_shapes(config.data):
        train = load_shapes_multitask(config.train_images, config.img_size, config.train_seed)
        val = load_shapes_multitask(config.val_images, config.img_size, config.val_seed) if config.val_images else None
        return train, val, None
    data = load_coco_multitask(config.data, config.images, config.labels, strict=config.strict)
    if len(data.det_classes) > 254:
        raise DataError(f"{config.data}: {len(data.det_classes)} categories; class masks hold at most 254")
    if "segment" in config.tasks and all(m is None for m in data.masks):
        raise DataError(f"{config.data}: no image has instance masks (segmentation) for every annotation; "
                        "drop segment from --tasks")
    if "classify" in config.tasks and len(data.classes) < 2:
        raise DataError(f"{config.labels}: classify needs at least 2 classes, found {len(data.classes)}")
    train_idx, val_idx = split_indices(len(data), config.val_fraction, config.trainer.seed, method="permutation")
    split = {"kind": "fraction", "val_fraction": config.val_fraction, "seed": config.trainer.seed,
             "train_size": len(train_idx)}
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None), split


HEADLINE = ("accuracy", "miou", "dice", "pixel_accuracy", "map", "map50", "map75", "mar100", "num_images")


def multitask_plan(config: MultitaskConfig) -> TrainingPlan:
    """The multi-task run: some labels dropped on purpose (label fractions), the mean head score monitored."""
    seed = config.trainer.seed
    full, val, split = load_splits(config)
    train = drop_labels(full, config.seg_label_fraction, config.cls_label_fraction, seed, config.det_label_fraction)
    mean, std = default_mean_std(config.channels)
    datamodule = SeededDataModule(
        MultitaskDataset(train, build_mask_transform(config.img_size, mean, std, config.augment), config.mode, seed),
        MultitaskDataset(val, build_mask_transform(config.img_size, mean, std, None), config.mode, seed) if val else None,
        batch_size=min(config.batch_size, len(train)), num_workers=config.trainer.num_workers, seed=seed,
        collate_fn=multitask_collate,
    )

    def finish(module: MultitaskModule, trainer: pl.Trainer) -> dict:
        return {
            **{f"loss_weight_{t}": w for t, w in module.weighting.effective_weights().items()},
            "labelled_masks": sum(m is not None for m in train.masks),
            "labelled_classes": sum(y >= 0 for y in train.labels),
            "labelled_boxes": sum(b is not None for b in train.boxes),
        }

    return TrainingPlan(
        command="omnivis train multitask",
        datamodule=datamodule,
        build_module=lambda: MultitaskModule(config, full.classes, full.det_classes),
        header=bundle_config(config, len(train), full.classes, full.det_classes, split),
        evaluate=(lambda bundle, progress: evaluate_multitask(bundle, data=val, out_dir=bundle, progress=progress))
        if val else None,
        summary_keys=HEADLINE,
        finish=finish,
        monitor="val/score" if val else None,
        # a batch may lack one kind of label (label fractions, images without boxes): that head then gets no gradient
        partial_graph=len(config.tasks) > 1,
        skipped=full.skipped,
    )


def train_multitask(config: MultitaskConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train every head of ``config.tasks``, evaluate on the validation scenes and write one bundle into ``out``."""
    return run_training(multitask_plan, config, out, resume, callbacks)
