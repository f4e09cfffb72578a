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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import track
from segmentation_models_pytorch.losses import DiceLoss
from torchmetrics.classification import MulticlassAccuracy

from omnivis.config import config_to_dict
from omnivis.data.builtin import SHAPE_CLASSES
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.masks import BACKGROUND, IGNORE_INDEX, MaskAugment, build_mask_transform, is_builtin_shapes, to_tv_tensors
from omnivis.data.detection import split_records
from omnivis.data.multitask import (  # noqa: F401  (re-exported: the task's data API)
    MultitaskData,
    MultitaskDataset,
    align_classes,
    drop_labels,
    load_coco_multitask,
    load_shapes_multitask,
    multitask_collate,
)
from omnivis.data.transforms import default_mean_std
from omnivis.engine.bundle import Bundle, load_bundle, load_bundle_weights, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer, fit, seed_everything
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.classification import plot_training_curves
from omnivis.metrics.detection import new_map_metric, plot_pr_curves, summarize_map
from omnivis.metrics.segmentation import confusion_to_metrics, metrics_report, pixel_confusion, plot_per_class_iou
from omnivis.models.backbones import Backbone, create_backbone
from omnivis.models.multitask import DEFAULT_TASKS, TASK_NAMES, WEIGHTINGS, LossWeighting, MultiTaskModel
from omnivis.models.segmentation import ARCHS, SIZE_MULTIPLE
from omnivis.tasks.common import adamw_with_warmup_cosine, check_run_dir, keep_previous_logs, load_images, log_training, write_run_config
from omnivis.tasks.segment import mask_summary, palette_for, segmentation_loss, write_mask_pictures

TASK = "multitask"
TASKS = DEFAULT_TASKS  # what a bundle without a "tasks" key (made before detection joined) holds
_MIN_DRAW_SIDE = 256  # box pictures of small images are enlarged so their labels can be read


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
        train_images, val_images, train_seed, val_seed: builtin:shapes scenes to train / validate on
            and their seeds.
        seg_label_fraction, cls_label_fraction, det_label_fraction: fraction of training images that
            keep their mask / class label / boxes (seeded by ``trainer.seed``); the others train only
            the other heads.
        weighting: ``fixed`` (``cls_weight``, ``seg_weight``, ``det_weight``) or ``uncertainty`` (learned).
        model, img_size, channels, arch, decoder_width, init_from: as ``omnivis train segment``.
        fpn_channels: width of the detection FPN and FCOS head (a multiple of 32, >= 64, as detect).
        score_threshold: lowest box score ``predict`` reports (evaluation keeps everything >= 0.05).
        batch_size, lr, weight_decay, warmup_epochs, dice_weight, label_smoothing: the recipe.
        augment: joint image/mask/box augmentation.
        trainer: engine settings.
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
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

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


def model_from_config(cfg: dict, backbone: Backbone) -> MultiTaskModel:
    """The model a bundle config describes (one without ``tasks`` predates detection: classify + segment)."""
    return MultiTaskModel(
        backbone, len(cfg["classes"]), len(cfg["seg_classes"]), arch=cfg["arch"], decoder_width=int(cfg["decoder_width"]),
        tasks=tuple(cfg.get("tasks", TASKS)), num_det_classes=len(cfg.get("det_classes", cfg["classes"])),
        img_size=int(cfg["img_size"]), fpn_channels=int(cfg.get("fpn_channels", 64)),
    )


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
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        # the weighting's log-variances train with the model, without weight decay
        return adamw_with_warmup_cosine(self, self.config.lr, self.config.weight_decay, total,
                                        int(self.config.warmup_epochs * per_epoch))


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


def _absolute(path: str | None) -> str | None:
    """A user path as an absolute one, so ``omnivis eval BUNDLE`` finds the data from any folder."""
    return str(Path(path).expanduser().resolve()) if path is not None else None


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
    train_idx, val_idx = split_records(len(data), config.val_fraction, config.trainer.seed)
    split = {"kind": "fraction", "val_fraction": config.val_fraction, "seed": config.trainer.seed,
             "train_size": len(train_idx)}
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None), split


def train_multitask(config: MultitaskConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train every head of ``config.tasks``, evaluate on the validation scenes and write one bundle into ``out``."""
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    seed = config.trainer.seed
    full, val, split = load_splits(config)
    train = drop_labels(full, config.seg_label_fraction, config.cls_label_fraction, seed, config.det_label_fraction)
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    mean, std = default_mean_std(config.channels)
    datamodule = SeededDataModule(
        MultitaskDataset(train, build_mask_transform(config.img_size, mean, std, config.augment), config.mode, seed),
        MultitaskDataset(val, build_mask_transform(config.img_size, mean, std, None), config.mode, seed) if val else None,
        batch_size=min(config.batch_size, len(train)), num_workers=config.trainer.num_workers, seed=seed,
        collate_fn=multitask_collate,
    )
    seed_everything(seed)
    module = MultitaskModule(config, full.classes, full.det_classes)
    # a batch may lack one kind of label (label fractions, images without boxes): that head then gets no gradient
    trainer = build_trainer(config.trainer, out, monitor="val/score" if val else None, monitor_mode="max",
                            extra_callbacks=callbacks, partial_graph=len(config.tasks) > 1)
    fit(trainer, module, datamodule, ckpt, f"omnivis train multitask --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    bconfig = bundle_config(config, len(train), full.classes, full.det_classes, split)
    save_bundle(out, module.model.state_dict(), bconfig, metrics={})
    metrics: dict = {}
    if val:
        metrics = evaluate_multitask(out, data=val, out_dir=out, progress=config.trainer.progress)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    headline = ("accuracy", "miou", "dice", "pixel_accuracy", "map", "map50", "map75", "mar100", "num_images")
    summary = {k: metrics[k] for k in headline if k in metrics}
    summary.update({f"loss_weight_{t}": w for t, w in module.weighting.effective_weights().items()})
    summary["labelled_masks"] = sum(m is not None for m in train.masks)
    summary["labelled_classes"] = sum(y >= 0 for y in train.labels)
    summary["labelled_boxes"] = sum(b is not None for b in train.boxes)
    summary["skipped_records"] = full.skipped
    save_bundle(out, module.model.state_dict(), bconfig, metrics=summary)
    return out


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------


class MultitaskPredictor:
    """Rebuilds the multi-head model from a bundle; predicts a class, a mask and boxes per image
    (whichever of them the bundle's ``tasks`` hold)."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != TASK:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a multitask model")
        cfg = bundle.config
        self.bundle = bundle
        self.tasks: tuple[str, ...] = tuple(cfg.get("tasks", TASKS))
        self.classes: list[str] = list(cfg["classes"])
        self.seg_classes: list[str] = list(cfg["seg_classes"])
        self.det_classes: list[str] = list(cfg.get("det_classes", cfg["classes"]))
        self.score_threshold = float(cfg.get("score_threshold", 0.5))
        self.img_size = int(cfg["img_size"])
        self.mode = "RGB" if int(cfg["in_chans"]) == 3 else "L"
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = model_from_config(cfg, backbone)
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device
        self.transform = build_mask_transform(self.img_size, cfg["mean"], cfg["std"], None)
        self._last: dict[str, np.ndarray] = {}

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> "MultitaskPredictor":
        return cls(load_bundle(path, task=TASK), device=device)

    @torch.inference_mode()
    def predict_outputs(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> dict:
        """Images -> the outputs of the bundle's tasks.

        Returns:
            ``{"classify": (N, K) class probabilities, "segment": one (H, W) uint8 mask per image at
            its own size, "detect": one ``{"boxes" (M, 4) xyxy in original pixels, "scores" (M,),
            "labels" (M,) class indices}`` per image, all scores >= 0.05}``, keys for ``tasks`` only.
        """
        probs, masks, boxes = [], [], []
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description="predicting", total=len(chunks), transient=True)
        for start in chunks:
            pil = load_images(images[start : start + batch_size], self.mode)
            batch = torch.stack([
                self.transform(to_tv_tensors(im, np.zeros((1, 1), np.uint8))[0]).as_subclass(torch.Tensor) for im in pil
            ]).to(self.device)
            out = self.model(batch)
            if "classify" in self.tasks:
                probs.append(out["classify"].float().softmax(dim=1).cpu())
            if "segment" in self.tasks:
                for im, logit in zip(pil, out["segment"].float()):
                    if logit.shape[-2:] != (im.height, im.width):
                        logit = F.interpolate(logit[None], size=(im.height, im.width), mode="bilinear",
                                              align_corners=False)[0]
                    masks.append(logit.argmax(dim=0).to(torch.uint8).cpu().numpy())
            if "detect" in self.tasks:
                for im, det in zip(pil, self.model.detector.detections(out["detect"], tuple(batch.shape[-2:]))):
                    sx, sy = im.width / batch.shape[-1], im.height / batch.shape[-2]
                    real = det["labels"] > 0  # column 0 is FCOS's background class: never an object
                    boxes.append({"boxes": det["boxes"][real].float().cpu() * torch.tensor([sx, sy, sx, sy]),
                                  "scores": det["scores"][real].float().cpu(), "labels": det["labels"][real].cpu() - 1})
        result: dict = {}
        if "classify" in self.tasks:
            result["classify"] = torch.cat(probs) if probs else torch.empty(0, len(self.classes))
        if "segment" in self.tasks:
            result["segment"] = masks
        if "detect" in self.tasks:
            result["detect"] = boxes
        return result

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Per image, JSON-ready: ``{"image", "summary"}`` plus, per task in the bundle, ``classify``:
        ``"label", "score", "classification": {"top_k": [...]}``; ``segment``: ``"class_fractions"``
        (the mask's share of each class); ``detect``: ``"detections": [{"label", "score", "box":
        [x1, y1, x2, y2]}]`` (original pixels, scores >= the bundle's ``score_threshold``, best first)."""
        outputs = self.predict_outputs(images)
        names = names or [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]
        results = []
        self._last = {}
        for i, name in enumerate(names):
            result: dict = {"image": name}
            parts = []
            if "classify" in self.tasks:
                scores, idx = outputs["classify"][i].topk(min(top_k, len(self.classes)))
                top = [{"label": self.classes[c], "score": round(float(s), 6)} for s, c in zip(scores, idx.tolist())]
                result.update({"label": top[0]["label"], "score": top[0]["score"], "classification": {"top_k": top}})
                parts.append(f"{top[0]['label']} ({top[0]['score']:.2f})")
            if "segment" in self.tasks:
                mask = outputs["segment"][i]
                seg_summary, result["class_fractions"] = mask_summary(mask, self.seg_classes, top_k)
                parts.append(f"mask: {seg_summary}")
                self._last[name] = mask
            if "detect" in self.tasks:
                det = outputs["detect"][i]
                keep = (det["scores"] >= self.score_threshold).nonzero().flatten().tolist()
                result["detections"] = [
                    {"label": self.det_classes[int(det["labels"][j])], "score": round(float(det["scores"][j]), 4),
                     "box": [round(float(v), 2) for v in det["boxes"][j]]}
                    for j in keep
                ]
                counts: dict[str, int] = {}
                for d in result["detections"]:
                    counts[d["label"]] = counts.get(d["label"], 0) + 1
                parts.append("boxes: " + (", ".join(f"{n} {label}" for label, n in counts.items()) or "none"))
            result["summary"] = "; ".join(parts)
            results.append(result)
        return results

    def save_visualizations(self, paths: Sequence[str | Path], results: list[dict], out_dir: str | Path) -> list[Path]:
        """``NAME_overlay.png`` and ``NAME_mask.png`` for the mask (as ``omnivis train segment``) and
        ``NAME_boxes.png``: the detections drawn over the mask overlay (or the image), enlarged below
        256 px so the labels can be read; box colours are the classes' mask colours."""
        written: list[Path] = []
        if "segment" in self.tasks:
            masks = [self._last.get(r["image"]) for r in results]
            if any(m is None for m in masks):
                masks = self.predict_outputs(list(paths))["segment"]
            written += write_mask_pictures(paths, masks, len(self.seg_classes), out_dir)
        if "detect" in self.tasks:
            written += self._draw_boxes(paths, results, Path(out_dir))
        return written

    def _draw_boxes(self, paths: Sequence[str | Path], results: list[dict], out_dir: Path) -> list[Path]:
        from torchvision.utils import draw_bounding_boxes

        out_dir.mkdir(parents=True, exist_ok=True)
        colours = [tuple(int(v) for v in c) for c in palette_for(len(self.det_classes) + 1)]
        written, used = [], set()
        for i, (path, result) in enumerate(zip(paths, results)):
            base = Path(path).stem if isinstance(path, (str, Path)) else f"image{i}"
            base = base if base not in used else f"{base}_{i}"  # the names write_mask_pictures gives
            used.add(base)
            overlay = out_dir / f"{base}_overlay.png"
            picture = Image.open(overlay).convert("RGB") if "segment" in self.tasks else load_images([path], "RGB")[0]
            image = torch.from_numpy(np.array(picture)).permute(2, 0, 1).contiguous()
            scale = max(1, math.ceil(_MIN_DRAW_SIDE / min(image.shape[1:])))
            image = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
            dets = result.get("detections", [])
            if dets:
                boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32) * scale
                image = draw_bounding_boxes(
                    image, boxes, labels=[f"{d['label']} {d['score']:.2f}" for d in dets], width=2,
                    colors=[colours[self.det_classes.index(d["label"]) + 1] for d in dets],
                )
            target = out_dir / f"{base}_boxes.png"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(target)
            written.append(target)
        return written


def evaluate_multitask(
    bundle_dir: str | Path,
    data: str | MultitaskData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    images: str | Path | None = None,
    labels: str | Path | None = None,
) -> dict:
    """Per-task metrics of the bundle's heads: classification ``accuracy``; segmentation ``miou``,
    ``dice``, ``pixel_accuracy``, ``per_class`` IoU/Dice; detection COCO ``map``, ``map50``, ``map75``,
    ``map_small/medium/large``, ``mar100`` and ``det_per_class`` AP (torchmetrics, pycocotools backend).

    Args:
        data: None (the bundle's own data), ``builtin:shapes``, a COCO JSON file, or loaded
            ``MultitaskData``.
        split: ``auto``: the held-out part of the bundle's own data (builtin:shapes: its validation
            scenes), or all of another file; ``val``: the held-out part; ``all``: everything
            (builtin:shapes: training and validation scenes).
        out_dir: where ``per_class_iou.png`` and ``pr_curve.png`` go (None: no pictures).
        strict: a bad record of a COCO file is an error instead of being skipped.
        images, labels: the images folder and ``path,label`` CSV of another COCO file (default: for
            the training file, the ones it was trained with; else the JSON's folder and no labels).
    """
    predictor = MultitaskPredictor.from_dir(bundle_dir)
    cfg = predictor.bundle.config
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    if not isinstance(data, MultitaskData):
        data = _eval_data(cfg, data, split, strict, predictor.img_size, images, labels)
    data = align_classes(data, predictor.classes if data.classes else [], predictor.det_classes)
    outputs = predictor.predict_outputs(data.images, progress=progress)
    metrics: dict = {}
    if "classify" in predictor.tasks:
        labels = torch.tensor(data.labels)
        labelled = labels >= 0
        if labelled.any():
            metrics["accuracy"] = round(float((outputs["classify"].argmax(dim=1)[labelled] == labels[labelled]).float().mean()), 6)
    if "segment" in predictor.tasks:
        confusion = pixel_confusion(len(predictor.seg_classes))
        for i, (pred, target) in enumerate(zip(outputs["segment"], data.masks)):
            if target is not None:
                if pred.shape != target.shape:
                    raise DataError(f"{data.name(i)}: the mask is {target.shape[0]}x{target.shape[1]} but the image "
                                    f"is {pred.shape[0]}x{pred.shape[1]}")
                confusion.update(torch.from_numpy(pred).long().reshape(-1), torch.from_numpy(target).long().reshape(-1))
        seg = metrics_report(confusion_to_metrics(confusion.compute()), predictor.seg_classes)
        metrics.update(seg)
        if out_dir is not None:
            metrics["per_class_iou_png"] = str(plot_per_class_iou(seg["per_class"], Path(out_dir) / "per_class_iou.png"))
    if "detect" in predictor.tasks:
        metrics.update(_detection_metrics(outputs["detect"], data, predictor.det_classes, out_dir))
    metrics["num_images"] = len(data)
    metrics["data"] = data.source
    return metrics


def _eval_data(cfg: dict, data: str | None, split: str, strict: bool, img_size: int,
               images: str | Path | None, labels: str | Path | None) -> MultitaskData:
    """What ``data`` + ``split`` name, loaded: the shapes scenes or (part of) a COCO file."""
    spec = data if data is not None else cfg.get("data", "builtin:shapes")
    if is_builtin_shapes(spec):
        s = cfg["split"]
        if "val_seed" not in s:
            raise DataError(f"{spec}: this bundle was trained on {cfg['data']}, whose classes the shapes do not have")
        loaded = load_shapes_multitask(s.get("val_images") or 200, img_size, s["val_seed"])
        if split == "all":
            loaded = load_shapes_multitask(s["train_size"], img_size, s["train_seed"]) + loaded
        return loaded
    if not str(spec).lower().endswith(".json"):
        raise DataError(f"{spec}: a multitask model is evaluated on builtin:shapes or a COCO JSON file")
    same = not is_builtin_shapes(cfg.get("data", "")) and _absolute(str(spec)) == cfg.get("data")
    if same:
        images = images if images is not None else cfg.get("images")
        labels = labels if labels is not None else cfg.get("labels")
    loaded = load_coco_multitask(spec, images, labels, strict=strict)
    if split == "val" or (split == "auto" and same):
        s = cfg["split"]
        if "val_fraction" not in s:
            raise DataError(f"{spec}: the bundle was trained on {cfg.get('data')}; use --split all for this file")
        _, val_idx = split_records(len(loaded), s["val_fraction"], s["seed"])
        if not len(val_idx):
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        loaded = loaded.subset(val_idx)
    return loaded


def _detection_metrics(preds: list[dict], data: MultitaskData, classes: list[str], out_dir: str | Path | None) -> dict:
    """COCO box mAP over the images that have box labels (metrics/detection.py's metric and names)."""
    metric = new_map_metric()
    scored = 0
    for i, pred in enumerate(preds):
        target = data.box_target(i)
        if target is None:
            continue
        metric.update([{"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"] + 1}],
                      [{"boxes": torch.as_tensor(target[0]).reshape(-1, 4), "labels": torch.as_tensor(target[1]) + 1}])
        scored += 1
    if not scored:
        return {}
    summary = summarize_map(metric.compute(), classes)
    curves = summary.pop("pr_curves")
    out = {k: round(v, 6) for k, v in summary.items() if isinstance(v, float)}
    out["det_per_class"] = summary["per_class"]
    out["num_box_images"] = scored
    if out_dir is not None:
        out["pr_curve_png"] = str(plot_pr_curves(curves, Path(out_dir) / "pr_curve.png"))
    return out
