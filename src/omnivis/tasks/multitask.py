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

from collections.abc import Sequence
from pathlib import Path

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
from omnivis.errors import DataError
from omnivis.inference.multitask import (
    TASK,
    _absolute,
    evaluate_multitask,
    model_from_config,
)
from omnivis.metrics.detection import new_map_metric
from omnivis.metrics.segmentation import confusion_to_metrics, pixel_confusion
from omnivis.models.backbones import create_backbone
from omnivis.models.multitask import LossWeighting, MultiTaskModel
from omnivis.models.segmentation import segmentation_loss
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.multitask_config import MultitaskConfig, parse_tasks  # noqa: F401
from omnivis.tasks.run import TrainingPlan, run_training

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
