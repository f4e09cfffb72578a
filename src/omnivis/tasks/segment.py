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
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import track
from segmentation_models_pytorch.losses import DiceLoss

from omnivis.config import config_to_dict
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.masks import (
    IGNORE_INDEX,
    MaskAugment,
    SegmentationData,
    SegmentationDataset,
    build_mask_transform,
    is_builtin_shapes,
    load_pair,
    load_shapes_segmentation,
    resolve_segmentation_data,
    to_tv_tensors,
)
from omnivis.data.readers import split_indices
from omnivis.data.transforms import default_mean_std
from omnivis.engine.bundle import Bundle, load_bundle, load_bundle_weights, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer, fit, seed_everything
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.classification import plot_training_curves
from omnivis.metrics.segmentation import confusion_to_metrics, metrics_report, pixel_confusion, plot_per_class_iou
from omnivis.models.backbones import create_backbone
from omnivis.models.segmentation import ARCHS, SIZE_MULTIPLE, SegmentationModel
from omnivis.tasks.common import adamw_with_warmup_cosine, check_run_dir, keep_previous_logs, load_images, log_training, write_run_config

TASK = "segment"


@dataclass(kw_only=True)
class SegmentConfig:
    """Everything that defines a semantic-segmentation run.

    Attributes:
        data: a mask folder (``images/``, ``masks/``, optional ``classes.txt``) or ``builtin:shapes``.
        strict: a bad image/mask pair is an error instead of being skipped with a warning.
        val_fraction: held-out fraction of a mask folder (fixed by ``trainer.seed``).
        train_images, val_images, train_seed, val_seed: ``builtin:shapes`` only: how many scenes
            to train and validate on, and the two seeds that draw them (different seeds: the
            validation scenes are new pictures, not held-out copies).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size; a multiple of 32 (the deepest backbone stride).
        channels: 3 (RGB) or 1 (grayscale).
        arch: decoder: ``unet``, ``fpn`` or ``deeplabv3plus``.
        decoder_width: decoder size (channels of its middle blocks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        batch_size, lr, weight_decay, warmup_epochs: the optimizer recipe (AdamW, warmup + cosine).
        dice_weight: weight of the Dice loss added to cross-entropy (0: cross-entropy only).
        augment: joint image/mask augmentation.
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
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
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

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


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice: DiceLoss | None, dice_weight: float) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` * Dice over (B, K, H, W) logits and (B, H, W) targets, 255 skipped."""
    loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
    if dice is not None and dice_weight > 0:
        loss = loss + dice_weight * dice(logits, masks)
    return loss


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
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        return adamw_with_warmup_cosine(
            self.model, self.config.lr, self.config.weight_decay, total, int(self.config.warmup_epochs * per_epoch)
        )


def load_splits(config: SegmentConfig) -> tuple[SegmentationData, SegmentationData | None]:
    """(train, val) data: two seeds for ``builtin:shapes``, a seeded split of a mask folder."""
    if is_builtin_shapes(config.data):
        train = load_shapes_segmentation(config.train_images, config.img_size, config.train_seed)
        val = load_shapes_segmentation(config.val_images, config.img_size, config.val_seed) if config.val_images else None
        return train, val
    data = resolve_segmentation_data(config.data, strict=config.strict)
    if config.val_fraction == 0:
        return data, None
    train_idx, val_idx = split_indices(np.zeros(len(data), dtype=np.int64), config.val_fraction, seed=config.trainer.seed,
                                       stratify=False)
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


def train_segmenter(config: SegmentConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the validation data and write a bundle into ``out``; returns ``out``.

    ``out`` also keeps ``checkpoints/`` (``last.ckpt`` for ``resume``), ``logs/``, ``run_config.json``,
    the per-class IoU plot and the training curves.
    """
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    train, val = load_splits(config)
    if len(train.classes) < 2:
        raise DataError(f"{config.data}: segmentation needs at least 2 classes, found {len(train.classes)}")
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    datamodule = make_datamodule(config, train, val)
    seed_everything(config.trainer.seed)  # initial weights depend on the seed only
    module = SegmentModule(config, train.classes)
    has_val = val is not None and len(val) > 0
    trainer = build_trainer(config.trainer, out, monitor="val/miou" if has_val else None, monitor_mode="max",
                            extra_callbacks=callbacks)
    fit(trainer, module, datamodule, ckpt, f"omnivis train segment --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    bconfig = bundle_config(config, train.classes, len(train))
    save_bundle(out, module.model.state_dict(), bconfig, metrics={})
    metrics: dict = {}
    if has_val:
        metrics = evaluate_segmenter(out, data=val, out_dir=out, progress=config.trainer.progress)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    summary = {k: metrics[k] for k in ("miou", "dice", "pixel_accuracy", "num_images") if k in metrics}
    save_bundle(out, module.model.state_dict(), bconfig, metrics=summary)
    return out


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation from a bundle
# ----------------------------------------------------------------------------------------------

PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]], dtype=np.uint8
)


def palette_for(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: class 0 black, then a fixed list, then seeded random colours."""
    extra = np.random.default_rng(0).integers(0, 256, size=(max(0, num_classes - len(PALETTE)), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])[:num_classes]


class SegmentPredictor:
    """Rebuilds a segmentation model from a bundle; predicts class masks at each image's own size."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != TASK:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a segmenter")
        cfg = bundle.config
        self.bundle = bundle
        self.classes: list[str] = list(cfg["classes"])
        self.img_size = int(cfg["img_size"])
        self.mode = "RGB" if int(cfg["in_chans"]) == 3 else "L"
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = SegmentationModel(backbone, len(self.classes), arch=cfg["arch"], decoder_width=int(cfg["decoder_width"]))
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device
        self.transform = build_mask_transform(self.img_size, cfg["mean"], cfg["std"], None)
        self._last: dict[str, np.ndarray] = {}

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> "SegmentPredictor":
        return cls(load_bundle(path, task=TASK), device=device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (C, S, S) normalized tensor (resize only)."""
        tensor, _ = to_tv_tensors(image, np.zeros((1, 1), dtype=np.uint8))
        return self.transform(tensor).as_subclass(torch.Tensor)

    @torch.inference_mode()
    def predict_masks(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> list[np.ndarray]:
        """Images (paths, PIL images or arrays) -> one (H, W) uint8 class-index mask per image, at its size."""
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description="segmenting", total=len(chunks), transient=True)
        masks: list[np.ndarray] = []
        for start in chunks:
            pil = load_images(images[start : start + batch_size], self.mode)
            batch = torch.stack([self.preprocess(im) for im in pil]).to(self.device)
            logits = self.model(batch).float()
            for im, logit in zip(pil, logits):
                size = (im.height, im.width)
                if logit.shape[-2:] != size:
                    logit = F.interpolate(logit[None], size=size, mode="bilinear", align_corners=False)[0]
                masks.append(logit.argmax(dim=0).to(torch.uint8).cpu().numpy())
        return masks

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Per image: ``{"image", "summary", "class_fractions", "size"}``; ``summary`` lists up to ``top_k``
        foreground classes by area, e.g. "circle 12%, square 5%"."""
        masks = self.predict_masks(images)
        names = names or [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]
        results = []
        self._last = {}
        for name, mask in zip(names, masks):
            summary, fractions = mask_summary(mask, self.classes, top_k)
            results.append({"image": name, "summary": summary, "class_fractions": fractions,
                            "size": [int(mask.shape[1]), int(mask.shape[0])]})
            self._last[name] = mask
        return results

    def save_visualizations(self, paths: Sequence[str | Path], results: list[dict], out_dir: str | Path) -> list[Path]:
        """Write ``NAME_overlay.png`` and ``NAME_mask.png`` per image (see :func:`write_mask_pictures`)."""
        masks = [self._last.get(r["image"]) for r in results]
        if any(m is None for m in masks):
            masks = self.predict_masks(list(paths))
        return write_mask_pictures(paths, masks, len(self.classes), out_dir)


def mask_summary(mask: np.ndarray, classes: Sequence[str], top_k: int = 5) -> tuple[str, dict[str, float]]:
    """(H, W) class mask -> ("circle 12%, square 5%", {class: fraction of pixels}); class 0 is background
    and left out of the summary."""
    counts = np.bincount(mask.reshape(-1), minlength=len(classes))
    fractions = {c: round(float(n) / mask.size, 6) for c, n in zip(classes, counts)}
    shown = sorted(((f, c) for c, f in list(fractions.items())[1:] if f > 0), reverse=True)[:top_k]
    return ", ".join(f"{c} {f:.0%}" for f, c in shown) or f"{classes[0]} only", fractions


def write_mask_pictures(paths: Sequence[str | Path], masks: Sequence[np.ndarray], num_classes: int,
                        out_dir: str | Path) -> list[Path]:
    """Per image: ``NAME_overlay.png`` (classes coloured over the image, background left clear) and
    ``NAME_mask.png`` (a palette PNG of class indices, readable as a mask again); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = palette_for(num_classes)
    full_palette = np.concatenate([colours, np.zeros((256 - len(colours), 3), np.uint8)]).reshape(-1).tolist()
    written: list[Path] = []
    used: set[str] = set()
    for i, (path, mask) in enumerate(zip(paths, masks)):
        base = Path(path).stem if isinstance(path, (str, Path)) else f"image{i}"
        base = base if base not in used else f"{base}_{i}"
        used.add(base)
        image = np.asarray(load_images([path], "RGB")[0]).astype(np.float32)
        alpha = np.where(mask[..., None] > 0, 0.55, 0.0)
        overlay = (image * (1 - alpha) + colours[mask].astype(np.float32) * alpha).round().astype(np.uint8)
        Image.fromarray(overlay).save(out_dir / f"{base}_overlay.png")
        index = Image.fromarray(mask, mode="P")
        index.putpalette(full_palette)
        index.save(out_dir / f"{base}_mask.png")
        written += [out_dir / f"{base}_overlay.png", out_dir / f"{base}_mask.png"]
    return written


def _eval_data(cfg: dict, data: str | SegmentationData | None, split: str, strict: bool) -> SegmentationData:
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    if isinstance(data, SegmentationData):
        return data
    spec = data or cfg["data"]
    s = cfg["split"]
    if is_builtin_shapes(spec):
        val = load_shapes_segmentation(s.get("val_images") or 200, cfg["img_size"], s.get("val_seed", 1))
        if split == "all":
            train = load_shapes_segmentation(s["train_size"], cfg["img_size"], s.get("train_seed", 0))
            return SegmentationData(train.samples + val.samples, val.classes, "builtin:shapes(train+val)")
        return val
    loaded = resolve_segmentation_data(spec, strict=strict)
    if split == "val" or (split == "auto" and spec == cfg.get("data")):
        if not s["val_fraction"]:
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        _, val_idx = split_indices(np.zeros(len(loaded), dtype=np.int64), s["val_fraction"], seed=s["seed"], stratify=False)
        loaded = loaded.subset(val_idx)
    return loaded


def evaluate_segmenter(
    bundle_dir: str | Path,
    data: str | SegmentationData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """mIoU, Dice, pixel accuracy and per-class IoU of a segmentation bundle, at each mask's own size.

    Args:
        data: a mask folder, ``builtin:shapes``, loaded data, or None for the bundle's own data.
        split: ``val`` (the bundle's held-out split; for ``builtin:shapes`` the scenes of its
            validation seed), ``all``, or ``auto``: ``val`` for the training data, else ``all``.
        out_dir: where ``per_class_iou.png`` goes (None: no plot).
    """
    predictor = SegmentPredictor.from_dir(bundle_dir)
    loaded = _eval_data(predictor.bundle.config, data, split, strict)
    num_classes = len(predictor.classes)
    confusion = pixel_confusion(len(predictor.classes))
    chunks = range(0, len(loaded), 32)
    if progress:
        chunks = track(chunks, description="evaluating", total=len(chunks), transient=True)
    for start in chunks:
        samples = loaded.samples[start : start + 32]
        pairs = [load_pair(s, predictor.mode) for s in samples]
        preds = predictor.predict_masks([image for image, _ in pairs])
        for sample, pred, (_, target) in zip(samples, preds, pairs):
            valid = target[target != IGNORE_INDEX]
            if valid.size and int(valid.max()) >= num_classes:
                raise DataError(f"{sample.name}: mask has class index {int(valid.max())} but the model knows "
                                f"{num_classes} classes ({', '.join(predictor.classes)})")
            confusion.update(torch.from_numpy(pred).long().reshape(-1), torch.from_numpy(target).long().reshape(-1))
    metrics = metrics_report(confusion_to_metrics(confusion.compute()), predictor.classes)
    metrics["num_images"] = len(loaded)
    metrics["data"] = loaded.source
    if out_dir is not None:
        metrics["per_class_iou_png"] = str(plot_per_class_iou(metrics["per_class"], Path(out_dir) / "per_class_iou.png"))
    return metrics
