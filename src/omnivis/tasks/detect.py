"""Object detection and instance segmentation: config, LightningModule, training, evaluation, prediction.

The model is a torchvision detector (FCOS by default; Faster R-CNN, RetinaNet, Mask R-CNN) on any
omnivis backbone through an FPN (``omnivis.models.detection``). Instance segmentation is the same
task with ``arch="maskrcnn"`` on data with masks. The bundle's ``config.json`` carries the classes,
COCO category ids, image size and mean/std, so ``DetectPredictor`` needs nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torchvision.transforms import v2

from omnivis.config import config_to_dict
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.detection import (
    DetectionData,
    DetectionDataset,
    build_detection_transform,
    detection_collate,
    is_builtin_shapes,
    mask_to_rle,
    resolve_detection_data,
    rle_to_mask,
    split_records,
    write_coco_results,
)
from omnivis.data.transforms import default_mean_std
from omnivis.engine.bundle import Bundle, load_bundle, load_bundle_weights, save_bundle
from omnivis.engine.trainer import TrainerConfig, build_trainer, fit, seed_everything
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.classification import plot_training_curves
from omnivis.metrics.detection import new_map_metric, plot_pr_curves, summarize_map
from omnivis.models.backbones import create_backbone
from omnivis.models.detection import ARCHS, build_detector
from omnivis.tasks.common import adamw_with_warmup_cosine, check_run_dir, keep_previous_logs, load_images, log_training, write_run_config

TASK = "detect"
_MIN_DRAW_SIDE = 256  # small images are drawn enlarged (nearest) so box labels can be read


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
        img_size: images are resized to this square size (the detector never rescales further).
        channels: must be 3 (detectors take RGB).
        arch: ``fcos`` (default: the best mAP per CPU minute), ``fasterrcnn``, ``retinanet``,
            ``maskrcnn`` (boxes and instance masks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        batch_size, lr, weight_decay, warmup_epochs, grad_clip: the recipe.
        num_train, num_test: builtin:shapes scenes for training (seed 0) and testing (seed 1).
        score_threshold: lowest score ``predict`` reports (evaluation keeps everything >= 0.05).
        fpn_channels: width of the pyramid and the heads.
        hflip, scale_min, photometric: training augmentation (scale_min 1 disables the crop jitter).
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    data: str = "builtin:shapes"
    images: str | None = None
    val_fraction: float = 0.2
    strict: bool = False
    model: str = "omnivis_resnet_tiny"
    img_size: int = 64
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
    hflip: bool = True
    scale_min: float = 1.0
    photometric: bool = False
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=15))

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown detector arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.channels != 3:
            raise ConfigError(f"detection takes RGB images: channels must be 3, got {self.channels}")
        if self.img_size < 32:
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


def build_model(config: DetectConfig, num_classes: int) -> torch.nn.Module:
    backbone = create_backbone(config.model, in_chans=3, pretrained=config.init_from, img_size=config.img_size)
    mean, std = default_mean_std(3)
    return build_detector(config.arch, backbone, num_classes, config.img_size, mean, std, config.fpn_channels)


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

    def __init__(self, config: DetectConfig, classes: Sequence[str]) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.model = build_model(config, len(self.classes))
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
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        return adamw_with_warmup_cosine(
            self.model, self.config.lr, self.config.weight_decay, total, int(self.config.warmup_epochs * per_epoch)
        )


def load_splits(config: DetectConfig) -> tuple[DetectionData, DetectionData | None, dict]:
    """(train, held-out or None, the split as recorded in the bundle)."""
    common = dict(num_train=config.num_train, num_test=config.num_test, img_size=config.img_size, strict=config.strict)
    if is_builtin_shapes(config.data):
        train = resolve_detection_data(config.data, split="train", **common)
        test = resolve_detection_data(config.data, split="test", **common)
        return train, test, {"kind": "shapes", "train_seed": 0, "test_seed": 1, "num_train": config.num_train,
                             "num_test": config.num_test}
    data = resolve_detection_data(config.data, config.images, **common)
    train_idx, val_idx = split_records(len(data.records), config.val_fraction, config.trainer.seed)
    split = {"kind": "fraction", "val_fraction": config.val_fraction, "seed": config.trainer.seed,
             "train_size": len(train_idx)}
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None), split


def bundle_config(config: DetectConfig, data: DetectionData, split: dict) -> dict:
    mean, std = default_mean_std(3)
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


def train_detector(config: DetectConfig, out: str | Path, resume: bool = False,
                   callbacks: list[pl.Callback] | None = None) -> Path:
    """Train, evaluate on the held-out data and write a bundle into ``out``; returns ``out``.

    ``out`` also keeps ``checkpoints/`` (``last.ckpt`` for ``resume``), ``logs/``,
    ``run_config.json``, ``pr_curve.png`` and ``eval_predictions.json`` (COCO results).
    """
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    train, val, split = load_splits(config)
    if config.masks and not train.has_masks:
        raise DataError(f"{config.data}: arch maskrcnn needs instance masks (COCO segmentations) on every annotation")
    if not train.records:
        raise DataError(f"{config.data}: no training images")
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    seed = config.trainer.seed
    train_tf = build_detection_transform(
        config.img_size, train=True, hflip=config.hflip, scale_min=config.scale_min, photometric=config.photometric
    )
    eval_tf = build_detection_transform(config.img_size, train=False)
    datamodule = SeededDataModule(
        DetectionDataset(train, train_tf, seed, masks=config.masks),
        DetectionDataset(val, eval_tf, seed) if val is not None else None,
        batch_size=min(config.batch_size, len(train.records)),
        num_workers=config.trainer.num_workers,
        seed=seed,
        collate_fn=detection_collate,
    )
    seed_everything(seed)
    module = DetectModule(config, train.classes)
    # not every parameter gets a gradient every step (backbone stages the FPN does not read at small
    # sizes; Mask R-CNN's mask head without positive proposals), which plain DDP refuses
    trainer = build_trainer(config.trainer, out, monitor="val/map50" if val is not None else None, monitor_mode="max",
                            extra_callbacks=callbacks, partial_graph=True)
    fit(trainer, module, datamodule, ckpt, f"omnivis train detect --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    bconfig = bundle_config(config, train, split)
    save_bundle(out, module.model.state_dict(), bconfig, metrics={})
    metrics: dict = {}
    if val is not None:
        metrics = evaluate_detector(out, data=val, out_dir=out, progress=config.trainer.progress)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    save_bundle(out, module.model.state_dict(), bconfig, metrics=_summary(metrics))
    return out


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation from a bundle
# ----------------------------------------------------------------------------------------------


class DetectPredictor:
    """Rebuilds a detector from a bundle; returns boxes (and masks) in original image pixels."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != TASK:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a detector")
        cfg = bundle.config
        self.bundle = bundle
        self.classes: list[str] = list(cfg["classes"])
        self.category_ids: list[int] = list(cfg.get("category_ids") or range(1, len(self.classes) + 1))
        self.img_size = int(cfg["img_size"])
        self.masks = bool(cfg.get("masks"))
        self.score_threshold = float(cfg.get("score_threshold", 0.5))
        backbone = create_backbone(cfg["backbone"], in_chans=3, img_size=self.img_size)
        self.model = build_detector(
            cfg["arch"], backbone, len(self.classes), self.img_size, tuple(cfg["mean"]), tuple(cfg["std"]),
            int(cfg.get("fpn_channels", 64)),
        )
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device
        self.transform = v2.Compose(
            [v2.ToImage(), v2.Resize((self.img_size, self.img_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
        )

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> "DetectPredictor":
        return cls(load_bundle(path, task=TASK), device=device)

    @torch.inference_mode()
    def detect(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> list[dict]:
        """Images (paths, PIL images or arrays) -> per image ``{"boxes" (N, 4) xyxy in original pixels,
        "scores" (N,), "labels" (N,) class indices (, "masks" (N, H, W) bool)}``, all scores >= 0.05."""
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description="detecting", total=len(chunks), transient=True)
        results = []
        for start in chunks:
            pil = load_images(images[start : start + batch_size], "RGB")
            batch = [self.transform(im).to(self.device) for im in pil]
            for im, pred in zip(pil, self.model(batch)):
                # FCOS and RetinaNet score the background slot 0 like any class (sigmoid); it is never an object
                pred = {k: v[pred["labels"] > 0] for k, v in pred.items()}
                sx, sy = im.width / self.img_size, im.height / self.img_size
                boxes = pred["boxes"].float().cpu() * torch.tensor([sx, sy, sx, sy])
                item = {"boxes": boxes, "scores": pred["scores"].float().cpu(), "labels": pred["labels"].cpu() - 1}
                if self.masks:
                    probs = pred["masks"].float()
                    if probs.shape[-2:] != (im.height, im.width) and len(probs):
                        probs = F.interpolate(probs, size=(im.height, im.width), mode="bilinear", align_corners=False)
                    item["masks"] = (probs[:, 0] > 0.5).cpu() if len(probs) else torch.zeros(0, im.height, im.width, dtype=torch.bool)
                results.append(item)
        return results

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Detections above the bundle's score threshold (``top_k`` is ignored: a classifier's option).

        Returns:
            ``[{"image", "summary", "detections": [{"label", "score", "box": [x1, y1, x2, y2]
            (, "mask_rle")}]}]``, boxes in original image pixels, best score first.
        """
        raw = self.detect(images)
        names = names or [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]
        results = []
        for name, pred in zip(names, raw):
            keep = (pred["scores"] >= self.score_threshold).nonzero().flatten().tolist()
            detections = []
            for i in keep:
                det = {
                    "label": self.classes[int(pred["labels"][i])],
                    "score": round(float(pred["scores"][i]), 4),
                    "box": [round(float(v), 2) for v in pred["boxes"][i]],
                }
                if self.masks:
                    det["mask_rle"] = mask_to_rle(pred["masks"][i].numpy())
                detections.append(det)
            counts: dict[str, int] = {}
            for det in detections:
                counts[det["label"]] = counts.get(det["label"], 0) + 1
            summary = ", ".join(f"{n} {label}" for label, n in counts.items()) or "no detections"
            results.append({"image": name, "summary": f"{len(detections)} objects: {summary}" if detections else summary,
                            "detections": detections})
        return results

    def save_visualizations(self, paths: Sequence[str | Path], results: Sequence[dict], out_dir: str | Path) -> list[Path]:
        """Draw each image's detections (boxes, labels, scores; masks for Mask R-CNN) to PNGs in ``out_dir``
        (images under 256 px are enlarged by a whole factor, nearest-neighbour, so labels can be read)
        and write ``predictions.json`` (COCO results; ``image_id`` is the image's position in ``paths``)."""
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]
        written: list[Path] = []
        coco: list[dict] = []
        used: set[str] = set()
        for index, (path, result) in enumerate(zip(paths, results)):
            image = torch.from_numpy(np.array(load_images([path], "RGB")[0])).permute(2, 0, 1).contiguous()
            scale = max(1, math.ceil(_MIN_DRAW_SIDE / min(image.shape[1:])))  # labels stay readable on 64 px images
            image = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
            dets = result["detections"]
            colors = [palette[self.classes.index(d["label"]) % len(palette)] for d in dets]
            if dets and self.masks:
                masks = torch.stack([torch.from_numpy(rle_to_mask(d["mask_rle"])) for d in dets])
                masks = masks.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
                image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colors)
            if dets:
                boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32) * scale
                labels = [f"{d['label']} {d['score']:.2f}" for d in dets]
                image = draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=1)
            stem = Path(str(path)).stem
            name = f"{stem}.png" if stem not in used else f"{stem}_{index}.png"
            used.add(stem)
            target = out_dir / name
            from PIL import Image

            Image.fromarray(image.permute(1, 2, 0).numpy()).save(target)
            written.append(target)
            coco.append({
                "image_id": index,
                "boxes": [d["box"] for d in dets],
                "scores": [d["score"] for d in dets],
                "category_ids": [self.category_ids[self.classes.index(d["label"])] for d in dets],
                **({"masks": [rle_to_mask(d["mask_rle"]) for d in dets]} if self.masks else {}),
            })
        written.append(write_coco_results(coco, out_dir / "predictions.json"))
        return written


def _align(data: DetectionData, classes: list[str]) -> DetectionData:
    """Relabel ``data`` into the model's class order; a class the model never saw is an error."""
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DataError(f"{data.source}: class '{unknown[0]}' is not one of the model's classes ({', '.join(classes)})")
    if data.classes == classes:
        return data
    from dataclasses import replace

    remap = np.array([classes.index(c) for c in data.classes], dtype=np.int64)
    records = [replace(r, labels=remap[r.labels]) for r in data.records]
    return replace(data, records=records, classes=list(classes))


def _eval_data(cfg: dict, data: str | DetectionData | None, split: str, strict: bool,
               images: str | Path | None = None) -> DetectionData:
    if isinstance(data, DetectionData):
        return data
    spec = data or cfg["data"]
    train_cfg = cfg.get("train_config", {})
    if is_builtin_shapes(spec):  # the test scenes (seed 1): shapes' training scenes are never evaluated
        return resolve_detection_data(spec, split="test", num_test=int(train_cfg.get("num_test", 200)),
                                      img_size=int(cfg["img_size"]))
    same = spec == cfg.get("data")
    loaded = resolve_detection_data(spec, images or (cfg.get("images") if same else None), strict=strict)
    if split == "val" or (split == "auto" and same):
        s = cfg["split"]
        _, val_idx = split_records(len(loaded.records), s["val_fraction"], s["seed"])
        if not len(val_idx):
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        loaded = loaded.subset(val_idx)
    return loaded


def evaluate_detector(
    bundle_dir: str | Path,
    data: str | DetectionData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    images: str | Path | None = None,
) -> dict:
    """COCO mAP of a detector bundle (box, and mask for Mask R-CNN), plus a PR-curve PNG in ``out_dir``.

    Args:
        data: a data spec, loaded data, or None for the bundle's own held-out data
            (builtin:shapes: its test scenes, seed 1).
        split: ``val``, ``all`` or ``auto`` (``val`` when ``data`` is the training COCO file).
        images: the image folder of a COCO ``data`` file (default: the JSON's folder, or the
            training run's ``--images`` when ``data`` is the training file).
    """
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    predictor = DetectPredictor.from_dir(bundle_dir)
    data = _align(_eval_data(predictor.bundle.config, data, split, strict, images), predictor.classes)
    if not data.records:
        raise DataError(f"{data.source}: no images to evaluate")
    masks = predictor.masks and data.has_masks
    preds = predictor.detect([r.source for r in data.records], progress=progress)
    metric = new_map_metric(masks=masks)
    for record, pred in zip(data.records, preds):
        p = {"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"] + 1}
        t = {"boxes": torch.as_tensor(record.boxes).reshape(-1, 4), "labels": torch.as_tensor(record.labels) + 1}
        if masks:
            p["masks"] = pred["masks"]
            t["masks"] = torch.as_tensor(record.masks, dtype=torch.bool)
        metric.update([p], [t])
    summary = summarize_map(metric.compute(), predictor.classes, masks=masks)
    curves = summary.pop("pr_curves")
    mask_curves = summary.pop("segm_pr_curves", None)
    metrics = {**summary, "num_images": len(data.records), "num_objects": int(sum(len(r.labels) for r in data.records)),
               "data": data.source}
    if out_dir is not None:
        out_dir = Path(out_dir)
        metrics["pr_curve_png"] = str(plot_pr_curves(curves, out_dir / "pr_curve.png"))
        if mask_curves is not None:
            metrics["mask_pr_curve_png"] = str(
                plot_pr_curves(mask_curves, out_dir / "mask_pr_curve.png", title="Mask precision-recall (IoU 0.5)")
            )
        results = [
            {"image_id": r.image_id, "boxes": p["boxes"].numpy(), "scores": p["scores"].numpy(),
             "category_ids": [predictor.category_ids[int(c)] for c in p["labels"]],
             **({"masks": p["masks"].numpy()} if masks else {})}
            for r, p in zip(data.records, preds)
        ]
        metrics["predictions_json"] = str(write_coco_results(results, out_dir / "eval_predictions.json"))
    return metrics
