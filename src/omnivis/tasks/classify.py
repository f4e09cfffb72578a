"""Image classification: config, LightningModule, training, evaluation and prediction.

The model is any backbone plus a linear head (``ImageClassifier``); the backbone can start from a
pretrained bundle (``init_from``). Training runs on the shared engine; the result is a bundle whose
``config.json`` carries classes and preprocessing, so ``ClassifyPredictor`` needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from timm.optim import param_groups_layer_decay
from torchmetrics.classification import MulticlassAccuracy

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.readers import ClassificationData, split_indices
from omnivis.data.transforms import (
    AugmentConfig,
    build_batch_mix,
    build_eval_transform,
    build_train_transform,
    default_mean_std,
)
from omnivis.engine.bundle import Bundle, load_bundle, load_bundle_weights, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer, fit, seed_everything
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.classification import (
    classification_metrics,
    plot_confusion_matrix,
    plot_training_curves,
)
from omnivis.models.backbones import create_backbone
from omnivis.models.heads import ImageClassifier
from omnivis.tasks.common import (
    adamw_with_warmup_cosine,
    check_run_dir,
    keep_previous_logs,
    load_images,
    log_training,
    write_run_config,
)

TASK = "classify"


@dataclass(kw_only=True)
class ClassifyConfig:
    """Everything that defines a classification run.

    Attributes:
        data: a class-folder path, ``builtin:NAME`` or ``torchvision:NAME:ROOT``.
        manifest: optional CSV (``path,label``) listing the images instead of class folders.
        strict: unreadable images are an error instead of being skipped with a warning.
        val_fraction: held-out fraction (stratified, fixed by ``trainer.seed``).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size.
        channels: 3 (RGB) or 1 (grayscale).
        init_from: a bundle or safetensors file to initialize the backbone from.
        freeze_backbone: train only the head (the backbone stays in eval mode, batch-norm included).
        unfreeze_after: with ``freeze_backbone``, train the whole model from this epoch on (0: never).
        layer_decay: layer-wise learning-rate decay (< 1 gives earlier layers smaller rates; the
            usual fine-tuning recipe for ViTs, via timm's ``param_groups_layer_decay``).
        batch_size, lr, weight_decay, warmup_epochs, label_smoothing, dropout, drop_path: the recipe.
        augment: training augmentation.
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    data: str = "builtin:digits"
    manifest: str | None = None
    strict: bool = False
    val_fraction: float = 0.2
    model: str = "omnivis_resnet_tiny"
    img_size: int = 32
    channels: int = 3
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size < 8:
            raise ConfigError(f"img_size must be >= 8, got {self.img_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 1 and lr > 0")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.unfreeze_after < 0 or (self.unfreeze_after and not self.freeze_backbone):
            raise ConfigError("unfreeze_after needs freeze_backbone and must be >= 0")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


def build_model(config: ClassifyConfig, num_classes: int) -> ImageClassifier:
    backbone = create_backbone(
        config.model, in_chans=config.channels, pretrained=config.init_from, img_size=config.img_size,
        drop_path_rate=config.drop_path,
    )
    return ImageClassifier(backbone, num_classes, dropout=config.dropout)


class ClassifyModule(pl.LightningModule):
    """Cross-entropy training (with label smoothing and optional Mixup/CutMix) of an ImageClassifier."""

    def __init__(self, config: ClassifyConfig, classes: Sequence[str]) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.model = build_model(config, len(self.classes))
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
        loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.config.label_smoothing)
        log_training(self, {"train/loss": loss})
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True)
        self.val_accuracy(logits, labels)
        self.log("val/accuracy", self.val_accuracy, prog_bar=True)

    def configure_optimizers(self) -> dict:
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        groups = None
        if self.config.layer_decay < 1.0:
            groups = param_groups_layer_decay(
                self.model.backbone.model, weight_decay=self.config.weight_decay, layer_decay=self.config.layer_decay
            )
            head = list(self.model.head.parameters())
            groups.append({"params": [p for p in head if p.ndim > 1], "weight_decay": self.config.weight_decay})
            groups.append({"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0})
        return adamw_with_warmup_cosine(
            self.model, self.config.lr, self.config.weight_decay, total, int(self.config.warmup_epochs * per_epoch),
            param_groups=groups,
        )


def bundle_config(config: ClassifyConfig, classes: Sequence[str], train_size: int) -> dict:
    mean, std = default_mean_std(config.channels)
    return {
        "task": TASK,
        "backbone": config.model,
        "classes": list(classes),
        "img_size": config.img_size,
        "in_chans": config.channels,
        "mean": list(mean),
        "std": list(std),
        "data": config.data,
        "manifest": config.manifest,
        "split": {"val_fraction": config.val_fraction, "seed": config.trainer.seed, "train_size": train_size},
        "init_from": config.init_from,
        "train_config": config_to_dict(config),
    }


def _split(data: ClassificationData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return split_indices(data.labels(), val_fraction, seed=seed, stratify=True)


def train_classifier(
    config: ClassifyConfig,
    out: str | Path,
    resume: bool = False,
    callbacks: list[pl.Callback] | None = None,
    module_factory: Callable[[ClassifyConfig, Sequence[str]], ClassifyModule] | None = None,
    extra_bundle_config: dict | None = None,
) -> Path:
    """Train, evaluate on the held-out split and write a bundle into ``out``; returns ``out``.

    ``out`` also keeps ``checkpoints/`` (``last.ckpt`` for ``resume``, ``best.ckpt``), ``logs/``
    (CSV + TensorBoard), ``run_config.json`` and the evaluation plots. ``callbacks`` are added to
    the engine's own (for monitoring or tests). ``module_factory`` builds a ClassifyModule variant
    (distillation does) and ``extra_bundle_config`` is recorded in the bundle's config.json.
    """
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    data = resolve_classification_data(config.data, manifest=config.manifest, strict=config.strict)
    if len(data.classes) < 2:
        raise DataError(f"{config.data}: classification needs at least 2 classes, found {len(data.classes)}")
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    train_idx, val_idx = _split(data, config.val_fraction, config.trainer.seed)
    mean, std = default_mean_std(config.channels)
    train_tf = build_train_transform(config.img_size, mean, std, config.augment)
    eval_tf = build_eval_transform(config.img_size, mean, std)
    seed = config.trainer.seed
    datamodule = SeededDataModule(
        ImageClassificationDataset(data.subset(train_idx), train_tf, config.mode, seed),
        ImageClassificationDataset(data.subset(val_idx), eval_tf, config.mode, seed) if len(val_idx) else None,
        batch_size=min(config.batch_size, len(train_idx)),
        num_workers=config.trainer.num_workers,
        seed=seed,
    )
    seed_everything(seed)  # initial weights depend on the seed only, not on what ran before
    module = (module_factory or ClassifyModule)(config, data.classes)
    has_val = len(val_idx) > 0
    trainer = build_trainer(
        config.trainer, out, monitor="val/accuracy" if has_val else None, monitor_mode="max", extra_callbacks=callbacks
    )
    fit(trainer, module, datamodule, ckpt, f"omnivis train classify --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    bconfig = {**bundle_config(config, data.classes, len(train_idx)), **(extra_bundle_config or {})}
    save_bundle(out, module.model.state_dict(), bconfig, metrics={})
    metrics: dict = {}
    if has_val:
        metrics = evaluate_classifier(out, data=data.subset(val_idx), out_dir=out, progress=config.trainer.progress)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    save_bundle(out, module.model.state_dict(), bconfig, metrics=_summary(metrics))
    return out


def _summary(metrics: dict) -> dict:
    keys = ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1", "num_samples")
    return {k: metrics[k] for k in keys if k in metrics}


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation from a bundle
# ----------------------------------------------------------------------------------------------


class ClassifyPredictor:
    """Rebuilds a classifier from a bundle and predicts top-k classes with probabilities."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != TASK:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a classifier")
        cfg = bundle.config
        self.bundle = bundle
        self.classes: list[str] = list(cfg["classes"])
        self.img_size = int(cfg["img_size"])
        self.mode = "RGB" if int(cfg["in_chans"]) == 3 else "L"
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = ImageClassifier(backbone, len(self.classes))
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device
        self.transform = build_eval_transform(self.img_size, tuple(cfg["mean"]), tuple(cfg["std"]))

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> "ClassifyPredictor":
        return cls(load_bundle(path, task=TASK), device=device)

    @torch.inference_mode()
    def predict_proba(self, images: Sequence, batch_size: int = 128, progress: bool = False) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> (N, C) class probabilities."""
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description="predicting", total=len(chunks), transient=True)
        out = []
        for start in chunks:
            pil = load_images(images[start : start + batch_size], self.mode)
            batch = torch.stack([self.transform(im) for im in pil]).to(self.device)
            out.append(self.model(batch).float().softmax(dim=1).cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Top-k predictions: ``[{"image", "label", "score", "top_k": [{"label", "score"}, ...]}]``."""
        probs = self.predict_proba(images)
        k = min(top_k, len(self.classes))
        scores, indices = probs.topk(k, dim=1)
        names = names or [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]
        results = []
        for name, s, idx in zip(names, scores.tolist(), indices.tolist()):
            top = [{"label": self.classes[i], "score": round(p, 6)} for i, p in zip(idx, s)]
            results.append({"image": name, "label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return results


def _align_classes(data: ClassificationData, classes: list[str]) -> ClassificationData:
    """Relabel ``data`` into the model's class order; a class the model never saw is an error."""
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DataError(
            f"{data.source}: class '{unknown[0]}' is not one of the model's {len(classes)} classes ({', '.join(classes[:10])}"
            f"{' ...' if len(classes) > 10 else ''})"
        )
    if data.classes == classes:
        return data
    remap = {i: classes.index(c) for i, c in enumerate(data.classes)}
    from dataclasses import replace

    samples = [replace(s, label=remap[s.label]) if s.label >= 0 else s for s in data.samples]
    return ClassificationData(samples=samples, classes=list(classes), source=data.source, skipped=data.skipped)


def evaluate_classifier(
    bundle_dir: str | Path,
    data: str | ClassificationData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """Metrics of a classifier bundle on labelled data, plus a confusion-matrix PNG in ``out_dir``.

    Args:
        data: a data spec, loaded data, or None for the data the bundle was trained on.
        split: ``val`` (the bundle's own held-out split), ``all``, or ``auto``: ``val`` when ``data``
            is the training data, else ``all``.
    """
    predictor = ClassifyPredictor.from_dir(bundle_dir)
    cfg = predictor.bundle.config
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    if not isinstance(data, ClassificationData):
        spec = data or cfg["data"]
        manifest = cfg.get("manifest") if spec == cfg.get("data") else None
        loaded = resolve_classification_data(spec, manifest=manifest, strict=strict)
        if split == "val" or (split == "auto" and spec == cfg.get("data")):
            s = cfg["split"]
            _, val_idx = _split(loaded, s["val_fraction"], s["seed"])
            if not len(val_idx):
                raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
            loaded = loaded.subset(val_idx)
        data = loaded
    data = _align_classes(data, predictor.classes)
    labelled = [i for i, s in enumerate(data.samples) if s.label >= 0]
    if not labelled:
        raise DataError(f"{data.source}: no labelled images to evaluate")
    samples = [data.samples[i] for i in labelled]
    probs = predictor.predict_proba([s.source for s in samples], progress=progress)
    targets = torch.tensor([s.label for s in samples], dtype=torch.long)
    metrics = classification_metrics(probs, targets, predictor.classes)
    metrics["data"] = data.source
    if out_dir is not None:
        path = plot_confusion_matrix(metrics["confusion_matrix"], predictor.classes, Path(out_dir) / "confusion_matrix.png")
        metrics["confusion_matrix_png"] = str(path)
    return metrics
