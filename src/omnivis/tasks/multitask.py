"""Multi-task learning: one backbone, a classification head and a segmentation head, one bundle.

Data is ``builtin:shapes``: every scene has a class label (its most visible shape, as
``builtin:shapes`` for classification) and a class mask (background + shapes). To model datasets
where an image carries only some label types, ``seg_label_fraction`` / ``cls_label_fraction`` keep
that kind of label for a seeded fraction of the training images only; a batch's loss for a task
uses only the images that have its label. Task losses are combined with fixed weights or learned
uncertainty weighting (Kendall et al. 2018: ``sum_i exp(-s_i) L_i + s_i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from segmentation_models_pytorch.losses import DiceLoss
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from omnivis.config import config_to_dict
from omnivis.data.builtin import SHAPE_CLASSES, make_shapes
from omnivis.data.datamodule import SeededDataModule, mix_seed
from omnivis.data.masks import (
    BACKGROUND,
    IGNORE_INDEX,
    MaskAugment,
    build_mask_transform,
    is_builtin_shapes,
    shapes_class_map,
    to_tv_tensors,
)
from omnivis.data.images import array_to_image
from omnivis.data.transforms import default_mean_std
from omnivis.engine.bundle import Bundle, load_bundle, load_bundle_weights, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer, fit, seed_everything
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.classification import plot_training_curves
from omnivis.metrics.segmentation import confusion_to_metrics, metrics_report, pixel_confusion, plot_per_class_iou
from omnivis.models.backbones import create_backbone
from omnivis.models.multitask import WEIGHTINGS, LossWeighting, MultiTaskModel
from omnivis.models.segmentation import ARCHS, SIZE_MULTIPLE
from omnivis.tasks.common import adamw_with_warmup_cosine, check_run_dir, keep_previous_logs, load_images, write_run_config
from omnivis.tasks.segment import mask_summary, segmentation_loss, write_mask_pictures

TASK = "multitask"
TASKS = ("classify", "segment")


@dataclass(kw_only=True)
class MultitaskConfig:
    """Everything that defines a classification + segmentation run.

    Attributes:
        data: ``builtin:shapes`` (the one dataset with both label kinds built in).
        train_images, val_images, train_seed, val_seed: scenes to train / validate on and their seeds.
        seg_label_fraction, cls_label_fraction: fraction of training images that keep their mask /
            class label (seeded by ``trainer.seed``); the others train only the other head.
        weighting: ``fixed`` (``seg_weight`` and ``cls_weight``) or ``uncertainty`` (learned).
        model, img_size, channels, arch, decoder_width, init_from: as ``omnivis train segment``.
        batch_size, lr, weight_decay, warmup_epochs, dice_weight, label_smoothing: the recipe.
        augment: joint image/mask augmentation.
        trainer: engine settings.
    """

    data: str = "builtin:shapes"
    train_images: int = 600
    val_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    seg_label_fraction: float = 1.0
    cls_label_fraction: float = 1.0
    weighting: str = "uncertainty"
    cls_weight: float = 1.0
    seg_weight: float = 1.0
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
    label_smoothing: float = 0.0
    augment: MaskAugment = field(default_factory=lambda: MaskAugment(hflip=True, scale_min=0.7, color_jitter=0.2))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if not is_builtin_shapes(self.data):
            raise ConfigError(f"multitask data must be builtin:shapes (class labels + masks), got '{self.data}'")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting '{self.weighting}'; choose one of {', '.join(WEIGHTINGS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.img_size < SIZE_MULTIPLE or self.img_size % SIZE_MULTIPLE:
            raise ConfigError(f"img_size must be a multiple of {SIZE_MULTIPLE}, got {self.img_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("seg_label_fraction", "cls_label_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.seg_label_fraction == 0 and self.cls_label_fraction == 0:
            raise ConfigError("seg_label_fraction and cls_label_fraction cannot both be 0: nothing to learn")
        if self.cls_weight < 0 or self.seg_weight < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("cls_weight and seg_weight must be >= 0, batch_size >= 1 and lr > 0")
        if self.train_images < 1 or self.val_images < 0:
            raise ConfigError("train_images must be >= 1 and val_images >= 0")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


# ----------------------------------------------------------------------------------------------
# Data: images with a class label and/or a mask
# ----------------------------------------------------------------------------------------------


@dataclass
class MultitaskData:
    """Parallel lists: images (H, W, 3) uint8, masks ((H, W) uint8 or None), labels (-1 = none)."""

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    labels: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.images)


def load_shapes_multitask(n: int, img_size: int, seed: int) -> MultitaskData:
    """Scenes with both labels: class = the most visible object's shape, mask = background + shapes."""
    scenes = make_shapes(n, img_size, seed).scenes
    labels = [int(s.labels[int(np.argmax(s.masks.sum(axis=(1, 2))))]) for s in scenes]
    return MultitaskData([s.image for s in scenes], [shapes_class_map(s.masks, s.labels) for s in scenes], labels,
                         f"builtin:shapes(seed={seed})")


def drop_labels(data: MultitaskData, seg_fraction: float, cls_fraction: float, seed: int) -> MultitaskData:
    """Keep masks for a seeded ``seg_fraction`` of the images and class labels for ``cls_fraction``."""
    n = len(data)
    keep_seg = set(np.random.default_rng(mix_seed(seed, 1)).permutation(n)[: round(seg_fraction * n)].tolist())
    keep_cls = set(np.random.default_rng(mix_seed(seed, 2)).permutation(n)[: round(cls_fraction * n)].tolist())
    return MultitaskData(
        data.images,
        [m if i in keep_seg else None for i, m in enumerate(data.masks)],
        [y if i in keep_cls else -1 for i, y in enumerate(data.labels)],
        data.source,
    )


class MultitaskDataset(Dataset):
    """``(image (C, S, S), mask (S, S) int64 with 255 where unlabelled, label (-1: none))`` items,
    addressed by ``(epoch, index)`` with augmentation seeded by ``(seed, epoch, index)``."""

    def __init__(self, data: MultitaskData, transform, mode: str = "RGB", seed: int = 0) -> None:
        self.data, self.transform, self.mode, self.seed = data, transform, mode, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        array = self.data.images[index]
        mask = self.data.masks[index]
        mask = mask if mask is not None else np.full(array.shape[:2], IGNORE_INDEX, np.uint8)
        image, mask_t = to_tv_tensors(array_to_image(array, self.mode), mask)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index))
            image, mask_t = self.transform(image, mask_t)
        return image.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor), self.data.labels[index]


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def build_model(config: MultitaskConfig, pretrained: str | None = None) -> MultiTaskModel:
    backbone = create_backbone(config.model, in_chans=config.channels, pretrained=pretrained, img_size=config.img_size)
    return MultiTaskModel(backbone, len(SHAPE_CLASSES), len(SHAPE_CLASSES) + 1, arch=config.arch,
                          decoder_width=config.decoder_width)


class MultitaskModule(pl.LightningModule):
    """Both losses on the images that carry each label, combined by ``LossWeighting``."""

    def __init__(self, config: MultitaskConfig) -> None:
        super().__init__()
        self.config = config
        self.model = build_model(config, pretrained=config.init_from)
        self.weighting = LossWeighting(TASKS, config.weighting, {"classify": config.cls_weight, "segment": config.seg_weight})
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)
        self.val_accuracy = MulticlassAccuracy(num_classes=len(SHAPE_CLASSES), average="micro")
        self.val_confusion = pixel_confusion(len(SHAPE_CLASSES) + 1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks, labels = batch
        out = self.model(images)
        has_label = labels >= 0
        has_mask = (masks != IGNORE_INDEX).flatten(1).any(dim=1)
        losses: dict[str, torch.Tensor | None] = {"classify": None, "segment": None}
        if has_label.any():
            losses["classify"] = F.cross_entropy(out["classify"][has_label], labels[has_label],
                                                 label_smoothing=self.config.label_smoothing)
            self.log("train/loss_classify", losses["classify"])
        if has_mask.any():
            losses["segment"] = segmentation_loss(out["segment"][has_mask], masks[has_mask], self.dice,
                                                  self.config.dice_weight)
            self.log("train/loss_segment", losses["segment"])
        loss = self.weighting(losses)
        self.log("train/loss", loss, prog_bar=True)
        for task, weight in self.weighting.effective_weights().items():
            self.log(f"train/weight_{task}", weight)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks, labels = batch
        out = self.model(images)
        self.val_accuracy(out["classify"], labels)
        self.val_confusion.update(out["segment"].argmax(dim=1).reshape(-1), masks.reshape(-1))

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_accuracy.compute()
        miou = confusion_to_metrics(self.val_confusion.compute())["miou"].nan_to_num(0.0)
        self.log_dict({"val/accuracy": accuracy, "val/miou": miou, "val/score": (accuracy + miou) / 2}, prog_bar=True)
        self.val_accuracy.reset()
        self.val_confusion.reset()

    def configure_optimizers(self) -> dict:
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        # the weighting's log-variances train with the model, without weight decay
        return adamw_with_warmup_cosine(self, self.config.lr, self.config.weight_decay, total,
                                        int(self.config.warmup_epochs * per_epoch))


def bundle_config(config: MultitaskConfig, train_size: int) -> dict:
    mean, std = default_mean_std(config.channels)
    return {
        "task": TASK,
        "backbone": config.model,
        "arch": config.arch,
        "decoder_width": config.decoder_width,
        "classes": list(SHAPE_CLASSES),
        "seg_classes": [BACKGROUND, *SHAPE_CLASSES],
        "img_size": config.img_size,
        "in_chans": config.channels,
        "mean": list(mean),
        "std": list(std),
        "data": config.data,
        "split": {"train_seed": config.train_seed, "val_seed": config.val_seed, "train_size": train_size,
                  "val_images": config.val_images},
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
    }


def train_multitask(config: MultitaskConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train both heads, evaluate on the validation scenes and write one bundle into ``out``."""
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    seed = config.trainer.seed
    full = load_shapes_multitask(config.train_images, config.img_size, config.train_seed)
    train = drop_labels(full, config.seg_label_fraction, config.cls_label_fraction, seed)
    val = load_shapes_multitask(config.val_images, config.img_size, config.val_seed) if config.val_images else None
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    mean, std = default_mean_std(config.channels)
    datamodule = SeededDataModule(
        MultitaskDataset(train, build_mask_transform(config.img_size, mean, std, config.augment), config.mode, seed),
        MultitaskDataset(val, build_mask_transform(config.img_size, mean, std, None), config.mode, seed) if val else None,
        batch_size=min(config.batch_size, len(train)), num_workers=config.trainer.num_workers, seed=seed,
    )
    seed_everything(seed)
    module = MultitaskModule(config)
    trainer = build_trainer(config.trainer, out, monitor="val/score" if val else None, monitor_mode="max",
                            extra_callbacks=callbacks)
    fit(trainer, module, datamodule, ckpt, f"omnivis train multitask --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    bconfig = bundle_config(config, len(train))
    save_bundle(out, module.model.state_dict(), bconfig, metrics={})
    metrics: dict = {}
    if val:
        metrics = evaluate_multitask(out, data=val, out_dir=out, progress=config.trainer.progress)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    summary = {k: metrics[k] for k in ("accuracy", "miou", "dice", "pixel_accuracy", "num_images") if k in metrics}
    summary.update({f"loss_weight_{t}": w for t, w in module.weighting.effective_weights().items()})
    summary["labelled_masks"] = sum(m is not None for m in train.masks)
    summary["labelled_classes"] = sum(y >= 0 for y in train.labels)
    save_bundle(out, module.model.state_dict(), bconfig, metrics=summary)
    return out


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------


class MultitaskPredictor:
    """Rebuilds the two-headed model from a bundle; predicts a class and a mask per image."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != TASK:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a multitask model")
        cfg = bundle.config
        self.bundle = bundle
        self.classes: list[str] = list(cfg["classes"])
        self.seg_classes: list[str] = list(cfg["seg_classes"])
        self.img_size = int(cfg["img_size"])
        self.mode = "RGB" if int(cfg["in_chans"]) == 3 else "L"
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = MultiTaskModel(backbone, len(self.classes), len(self.seg_classes), arch=cfg["arch"],
                                    decoder_width=int(cfg["decoder_width"]))
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device
        self.transform = build_mask_transform(self.img_size, cfg["mean"], cfg["std"], None)
        self._last: dict[str, np.ndarray] = {}

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> "MultitaskPredictor":
        return cls(load_bundle(path, task=TASK), device=device)

    @torch.inference_mode()
    def predict_outputs(self, images: Sequence, batch_size: int = 32,
                        progress: bool = False) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Images -> ((N, K) class probabilities, one (H, W) uint8 mask per image at its own size)."""
        probs, masks = [], []
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description="predicting", total=len(chunks), transient=True)
        for start in chunks:
            pil = load_images(images[start : start + batch_size], self.mode)
            batch = torch.stack([
                self.transform(to_tv_tensors(im, np.zeros((1, 1), np.uint8))[0]).as_subclass(torch.Tensor) for im in pil
            ]).to(self.device)
            out = self.model(batch)
            probs.append(out["classify"].float().softmax(dim=1).cpu())
            for im, logit in zip(pil, out["segment"].float()):
                if logit.shape[-2:] != (im.height, im.width):
                    logit = F.interpolate(logit[None], size=(im.height, im.width), mode="bilinear", align_corners=False)[0]
                masks.append(logit.argmax(dim=0).to(torch.uint8).cpu().numpy())
        return (torch.cat(probs) if probs else torch.empty(0, len(self.classes))), masks

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Per image: ``{"image", "summary", "label", "score", "classification": {"top_k": [...]},
        "class_fractions"}`` (the mask's share of each segmentation class)."""
        probs, masks = self.predict_outputs(images)
        names = names or [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]
        k = min(top_k, len(self.classes))
        results = []
        self._last = {}
        for name, p, mask in zip(names, probs, masks):
            scores, idx = p.topk(k)
            top = [{"label": self.classes[i], "score": round(float(s), 6)} for s, i in zip(scores, idx.tolist())]
            seg_summary, fractions = mask_summary(mask, self.seg_classes, top_k)
            results.append({
                "image": name, "summary": f"{top[0]['label']} ({top[0]['score']:.2f}); mask: {seg_summary}",
                "label": top[0]["label"], "score": top[0]["score"], "classification": {"top_k": top},
                "class_fractions": fractions,
            })
            self._last[name] = mask
        return results

    def save_visualizations(self, paths: Sequence[str | Path], results: list[dict], out_dir: str | Path) -> list[Path]:
        """The predicted masks as ``NAME_overlay.png`` and ``NAME_mask.png`` (as ``omnivis train segment``)."""
        masks = [self._last.get(r["image"]) for r in results]
        if any(m is None for m in masks):
            masks = self.predict_outputs(list(paths))[1]
        return write_mask_pictures(paths, masks, len(self.seg_classes), out_dir)


def evaluate_multitask(
    bundle_dir: str | Path,
    data: str | MultitaskData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """Per-task metrics: classification accuracy, segmentation mIoU / Dice / pixel accuracy / per-class IoU.

    Args:
        data: ``builtin:shapes`` (or None, the same), or loaded ``MultitaskData``.
        split: ``val``/``auto``: the validation scenes (the bundle's validation seed); ``all``: its
            training and validation scenes.
        strict: accepted for the common signature (built-in data has nothing to skip).
    """
    predictor = MultitaskPredictor.from_dir(bundle_dir)
    cfg = predictor.bundle.config
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    if not isinstance(data, MultitaskData):
        if data is not None and not is_builtin_shapes(data):
            raise DataError(f"{data}: a multitask model is evaluated on builtin:shapes (labels and masks)")
        s = cfg["split"]
        loaded = load_shapes_multitask(s.get("val_images") or 200, predictor.img_size, s["val_seed"])
        if split == "all":
            train = load_shapes_multitask(s["train_size"], predictor.img_size, s["train_seed"])
            loaded = MultitaskData(train.images + loaded.images, train.masks + loaded.masks,
                                   train.labels + loaded.labels, "builtin:shapes(train+val)")
        data = loaded
    probs, masks = predictor.predict_outputs(data.images, progress=progress)
    labels = torch.tensor(data.labels)
    labelled = labels >= 0
    metrics: dict = {}
    if labelled.any():
        metrics["accuracy"] = round(float((probs.argmax(dim=1)[labelled] == labels[labelled]).float().mean()), 6)
    confusion = pixel_confusion(len(predictor.seg_classes))
    for pred, target in zip(masks, data.masks):
        if target is not None:
            confusion.update(torch.from_numpy(pred).long().reshape(-1), torch.from_numpy(target).long().reshape(-1))
    seg = metrics_report(confusion_to_metrics(confusion.compute()), predictor.seg_classes)
    metrics.update(seg)
    metrics["num_images"] = len(data)
    metrics["data"] = data.source
    if out_dir is not None:
        metrics["per_class_iou_png"] = str(plot_per_class_iou(seg["per_class"], Path(out_dir) / "per_class_iou.png"))
    return metrics
