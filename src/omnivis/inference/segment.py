"""Using a segmentation bundle: ``SegmentPredictor`` (a class mask per image at its own size,
overlays) and ``evaluate_segmenter`` (mIoU, Dice, pixel accuracy, per-class IoU; COCO results).

Imports torch, timm and the model only: predicting does not import Lightning or the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import track
from torchvision.transforms import v2

from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.images import load_images
from omnivis.data.masks import (
    IGNORE_INDEX,
    SegmentationData,
    load_pair,
    load_shapes_segmentation,
    resolve_segmentation_data,
    to_tv_tensors,
)
from omnivis.data.splits import split_indices
from omnivis.deploy.graphs import SegmenterGraph
from omnivis.bundle import Bundle
from omnivis.errors import DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.metrics.fairness import GroupTable, group_report, read_group_table
from omnivis.metrics.masks import mask_results, mask_summary, write_mask_pictures
from omnivis.metrics.report import write_json
from omnivis.models.backbones import create_backbone
from omnivis.models.segmentation import SegmentationModel

TASK = "segment"


class SegmentPredictor(Predictor):
    """Rebuilds a segmentation model from a bundle; predicts class masks at each image's own size."""

    task = TASK
    noun = "segmenter"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        cfg = self.config
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = self.ready(
            SegmentationModel(backbone, len(self.classes), arch=cfg["arch"], decoder_width=int(cfg["decoder_width"]))
        )
        self.graph = SegmenterGraph(self.model, cfg["mean"], cfg["std"]).eval().to(self.device)
        self.geometry = v2.Resize((self.img_size, self.img_size), antialias=True)
        self._last: dict[str, np.ndarray] = {}

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (C, S, S) uint8 tensor, the graph's input (resize only)."""
        tensor, _ = to_tv_tensors(image, np.zeros((1, 1), dtype=np.uint8))
        return self.geometry(tensor).as_subclass(torch.Tensor)

    def prepare(self, images: Sequence) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> the graph's input, uint8 (N, C, S, S)."""
        return torch.stack([self.preprocess(im) for im in load_images(images, self.mode)])

    def predict_masks(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> list[np.ndarray]:
        """Images (paths, PIL images or arrays) -> one (H, W) uint8 class-index mask per image, at its size."""
        masks: list[np.ndarray] = []
        for pil in self.batches(images, batch_size, progress, "segmenting"):
            logits, classes = self.run_graph(torch.stack([self.preprocess(im) for im in pil]))
            for im, logit, mask in zip(pil, logits.float(), classes):
                size = (im.height, im.width)
                if logit.shape[-2:] != size:
                    logit = F.interpolate(logit[None], size=size, mode="bilinear", align_corners=False)[0]
                    mask = logit.argmax(dim=0).to(torch.uint8)
                masks.append(mask.numpy())
        return masks

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Per image: ``{"image", "summary", "class_fractions", "size"}``; ``summary`` lists up to ``top_k``
        foreground classes by area, e.g. "circle 12%, square 5%"."""
        masks = self.predict_masks(images)
        results = []
        self._last = {}
        for name, mask in zip(image_names(images, names), masks):
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


def _eval_data(cfg: dict, data: str | SegmentationData | None, split: str,
               strict: bool) -> tuple[SegmentationData, SegmentationData]:
    """(the data to score, the data it was drawn from: the whole folder when a held-out split is scored)."""
    if isinstance(data, SegmentationData):
        return data, data
    spec = data or cfg["data"]
    held_out = held_out_wanted(split, spec, cfg.get("data"))
    s = cfg["split"]
    if is_builtin_shapes(spec):
        val = load_shapes_segmentation(s.get("val_images") or 200, cfg["img_size"], s.get("val_seed", 1))
        if split == "all":
            train = load_shapes_segmentation(s["train_size"], cfg["img_size"], s.get("train_seed", 0))
            val = SegmentationData(train.samples + val.samples, val.classes, "builtin:shapes(train+val)")
        return val, val
    loaded = full = resolve_segmentation_data(spec, strict=strict)
    if held_out:
        if not s["val_fraction"]:
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        _, val_idx = split_indices(len(loaded), s["val_fraction"], seed=s["seed"])
        loaded = loaded.subset(val_idx)
    return loaded, full


HEADLINE = ("miou", "dice", "pixel_accuracy")


def group_table(groups: str | Path, loaded: SegmentationData, full: SegmentationData) -> GroupTable:
    """The group of each scored image (named as the reader names it, or by its image file); rows
    naming the rest of ``full`` (the training split) are skipped."""
    scored = {id(s) for s in loaded.samples}
    outside = [(s.name, s.image) for s in full.samples if id(s) not in scored]
    return read_group_table(groups, [s.name for s in loaded.samples], [s.image for s in loaded.samples], outside)


def class_remap(data: SegmentationData, classes: list[str]) -> np.ndarray | None:
    """A 256-entry lookup taking ``data``'s mask indices to the model's class order (255 stays 255),
    or None when the orders agree; a class the model never saw is an error."""
    if list(data.classes) == list(classes):
        return None
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DataError(f"{data.source}: class '{unknown[0]}' is not one of the model's {len(classes)} classes "
                        f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})")
    remap = np.arange(256, dtype=np.uint8)
    for index, name in enumerate(data.classes):
        remap[index] = classes.index(name)
    return remap


def evaluate_segmenter(
    bundle_dir: str | Path,
    data: str | SegmentationData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    onnx: str | Path | None = None,
    groups: str | Path | None = None,
) -> dict:
    """mIoU, Dice, pixel accuracy and per-class IoU of a segmentation bundle, at each mask's own size.

    Args:
        data: a mask folder, ``builtin:shapes``, loaded data, or None for the bundle's own data.
        split: ``val`` (the bundle's held-out split; for ``builtin:shapes`` the scenes of its
            validation seed), ``all``, or ``auto``: ``val`` for the training data, else ``all``.
        out_dir: where ``per_class_iou.png`` and what was scored go: ``eval_predictions.json``
            (COCO stuff-segmentation results, one RLE per class per image) and ``eval_images.json``
            (the image ids' names and sizes). None: nothing is written.
        onnx: score this exported file (``omnivis export``) with onnxruntime instead of the torch model.
        groups: a ``path,group`` CSV of the evaluated images: every metric per group, with the gaps
            (``per_group``; see ``omnivis.metrics.fairness``), and ``per_group.png`` in ``out_dir``.
    """
    # metrics (torchmetrics) are imported to evaluate, not to predict
    from omnivis.metrics.segmentation import (
        confusion_to_metrics,
        metrics_report,
        pixel_confusion,
        plot_per_class_iou,
    )

    predictor = SegmentPredictor.from_dir(bundle_dir)
    if onnx is not None:
        predictor.use_onnx(onnx)
    loaded, full = _eval_data(predictor.config, data, split, strict)
    table = group_table(groups, loaded, full) if groups is not None else None  # a bad CSV fails before inference
    per_image: list[torch.Tensor] = []  # each image's pixel confusion, to score groups of images
    remap = class_remap(loaded, predictor.classes)
    num_classes = len(predictor.classes)
    confusion = pixel_confusion(len(predictor.classes))
    scored: list[dict] = []  # what was scored, as COCO results (eval_predictions.json), if out_dir is given
    scored_images: list[dict] = []
    chunks = range(0, len(loaded), 32)
    if progress:
        chunks = track(chunks, description="evaluating", total=len(chunks), transient=True)
    for start in chunks:
        samples = loaded.samples[start : start + 32]
        pairs = [load_pair(s, predictor.mode) for s in samples]
        preds = predictor.predict_masks([image for image, _ in pairs])
        for sample, pred, (_, target) in zip(samples, preds, pairs):
            if remap is not None:
                target = remap[target]
            valid = target[target != IGNORE_INDEX]
            if valid.size and int(valid.max()) >= num_classes:
                raise DataError(f"{sample.name}: mask has class index {int(valid.max())} but the model knows "
                                f"{num_classes} classes ({', '.join(predictor.classes)})")
            confusion.update(torch.from_numpy(pred).long().reshape(-1), torch.from_numpy(target).long().reshape(-1))
            if table is not None:
                one = pixel_confusion(num_classes)
                one.update(torch.from_numpy(pred).long().reshape(-1), torch.from_numpy(target).long().reshape(-1))
                per_image.append(one.compute())
            if out_dir is not None:
                scored += mask_results(len(scored_images), pred, len(predictor.classes))
                scored_images.append({"id": len(scored_images), "file_name": sample.name,
                                      "height": int(pred.shape[0]), "width": int(pred.shape[1])})
    metrics = metrics_report(confusion_to_metrics(confusion.compute()), predictor.classes)
    metrics["num_images"] = len(loaded)
    metrics["data"] = loaded.source
    if onnx is not None:
        metrics["onnx"] = str(onnx)
    if table is not None:
        def score(idx: np.ndarray) -> dict:
            total = torch.stack([per_image[int(i)] for i in idx]).sum(0)
            return {**metrics_report(confusion_to_metrics(total), predictor.classes), "num_images": len(idx)}

        metrics["per_group"] = group_report(score, table, HEADLINE, out_dir)
    if out_dir is not None:
        metrics["per_class_iou_png"] = str(plot_per_class_iou(metrics["per_class"], Path(out_dir) / "per_class_iou.png"))
        metrics["predictions_json"] = str(write_json(scored, Path(out_dir) / "eval_predictions.json"))
        metrics["images_json"] = str(write_json(scored_images, Path(out_dir) / "eval_images.json"))
    return metrics
