"""Using a detector bundle: ``DetectPredictor`` (boxes, and masks for Mask R-CNN, in original image
pixels; drawn PNGs and COCO results) and ``evaluate_detector`` (COCO mAP through torchmetrics).

Imports torch, timm and the model only: predicting does not import Lightning or the training code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.detection import (
    resolve_detection_data,
    write_coco_results,
)
from omnivis.data.detection_records import DetectionData, mask_to_rle, rle_to_mask
from omnivis.data.images import load_images
from omnivis.data.splits import split_indices
from omnivis.deploy.graphs import DetectorGraph
from omnivis.bundle import Bundle
from omnivis.errors import DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.metrics.fairness import GroupTable, group_report, read_group_table
from omnivis.models.backbones import create_backbone
from omnivis.models.detection import build_detector

TASK = "detect"
_MIN_DRAW_SIDE = 256  # small images are drawn enlarged (nearest) so box labels can be read


class DetectPredictor(Predictor):
    """Rebuilds a detector from a bundle; returns boxes (and masks) in original image pixels."""

    task = TASK
    noun = "detector"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        cfg = self.config
        self.mode = "RGB"
        self.category_ids: list[int] = list(cfg.get("category_ids") or range(1, len(self.classes) + 1))
        self.masks = bool(cfg.get("masks"))
        self.score_threshold = float(cfg.get("score_threshold", 0.5))
        backbone = create_backbone(cfg["backbone"], in_chans=3, img_size=self.img_size)
        self.model = self.ready(build_detector(
            cfg["arch"], backbone, len(self.classes), self.img_size, tuple(cfg["mean"]), tuple(cfg["std"]),
            int(cfg.get("fpn_channels", 64)),
        ))
        self.geometry = v2.Compose([v2.ToImage(), v2.Resize((self.img_size, self.img_size), antialias=True)])
        self.transform = v2.Compose([self.geometry, v2.ToDtype(torch.float32, scale=True)])
        self.graph = DetectorGraph(self.model, masks=self.masks).eval()

    def prepare(self, images: Sequence) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> uint8 (N, 3, S, S); the graph takes them one at a time."""
        return torch.stack([self.geometry(im).as_subclass(torch.Tensor) for im in load_images(images, self.mode)])

    def _model_predictions(self, pil: list) -> list[dict]:
        """torchvision-style predictions (labels with the background slot 0) for a list of PIL images."""
        if self.session is None:
            return self.model([self.transform(im).to(self.device) for im in pil])
        predictions = []
        for im in pil:
            boxes, scores, classes, *masks = self.session(self.geometry(im).as_subclass(torch.Tensor)[None])
            predictions.append({"boxes": boxes, "scores": scores, "labels": classes + 1,
                                **({"masks": masks[0][:, None]} if masks else {})})
        return predictions

    @torch.inference_mode()
    def detect(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> list[dict]:
        """Images (paths, PIL images or arrays) -> per image ``{"boxes" (N, 4) xyxy in original pixels,
        "scores" (N,), "labels" (N,) class indices (, "masks" (N, H, W) bool)}``, all scores >= 0.05."""
        results = []
        for pil in self.batches(images, batch_size, progress, "detecting"):
            for im, pred in zip(pil, self._model_predictions(pil)):
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
        results = []
        for name, pred in zip(image_names(images, names), raw):
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


HEADLINE = ("map", "map50")


def _score(records: list, preds: list[dict], classes: list[str], masks: bool) -> dict:
    """COCO mAP (torchmetrics, pycocotools backend) of ``preds`` against ``records``, with the
    image and object counts: what ``evaluate_detector`` reports, for all images or a group of them."""
    # metrics (torchmetrics) are imported to evaluate, not to predict
    from omnivis.metrics.detection import new_map_metric, summarize_map

    metric = new_map_metric(masks=masks)
    for record, pred in zip(records, preds):
        p = {"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"] + 1}
        t = {"boxes": torch.as_tensor(record.boxes).reshape(-1, 4), "labels": torch.as_tensor(record.labels) + 1}
        if masks:
            p["masks"] = pred["masks"]
            t["masks"] = torch.as_tensor(record.masks, dtype=torch.bool)
        metric.update([p], [t])
    summary = summarize_map(metric.compute(), classes, masks=masks)
    return {**summary, "num_images": len(records), "num_objects": int(sum(len(r.labels) for r in records))}


def group_table(groups: str | Path, loaded: DetectionData, full: DetectionData) -> GroupTable:
    """The group of each scored image (its COCO ``file_name`` or built-in name, or its image file);
    rows naming the rest of ``full`` (the training split) are skipped."""
    scored = {id(r) for r in loaded.records}
    outside = [(r.name, r.source) for r in full.records if id(r) not in scored]
    return read_group_table(groups, [r.name for r in loaded.records], [r.source for r in loaded.records], outside)


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
               images: str | Path | None = None) -> tuple[DetectionData, DetectionData]:
    """(the data to score, the data it was drawn from: the whole file when a held-out split is scored)."""
    if isinstance(data, DetectionData):
        return data, data
    spec = data or cfg["data"]
    train_cfg = cfg.get("train_config", {})
    held_out = held_out_wanted(split, spec, cfg.get("data"))
    if is_builtin_shapes(spec):  # the test scenes (seed 1): shapes' training scenes are never evaluated
        test = resolve_detection_data(spec, split="test", num_test=int(train_cfg.get("num_test", 200)),
                                      img_size=int(cfg["img_size"]))
        return test, test
    same = spec == cfg.get("data")
    loaded = full = resolve_detection_data(spec, images or (cfg.get("images") if same else None), strict=strict)
    if held_out:
        s = cfg["split"]
        _, val_idx = split_indices(len(loaded.records), s["val_fraction"], s["seed"], method="permutation")
        if not len(val_idx):
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        loaded = loaded.subset(val_idx)
    return loaded, full


def evaluate_detector(
    bundle_dir: str | Path,
    data: str | DetectionData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    images: str | Path | None = None,
    onnx: str | Path | None = None,
    groups: str | Path | None = None,
) -> dict:
    """COCO mAP of a detector bundle (box, and mask for Mask R-CNN), plus a PR-curve PNG in ``out_dir``.

    Args:
        data: a data spec, loaded data, or None for the bundle's own held-out data
            (builtin:shapes: its test scenes, seed 1).
        split: ``val``, ``all`` or ``auto`` (``val`` when ``data`` is the training COCO file).
        images: the image folder of a COCO ``data`` file (default: the JSON's folder, or the
            training run's ``--images`` when ``data`` is the training file).
        onnx: score this exported file (``omnivis export``) with onnxruntime instead of the torch model.
        groups: a ``path,group`` CSV of the evaluated images: every metric per group, with the gaps
            (``per_group``; see ``omnivis.metrics.fairness``), and ``per_group.png`` in ``out_dir``.
    """
    from omnivis.metrics.detection import plot_pr_curves

    predictor = DetectPredictor.from_dir(bundle_dir)
    if onnx is not None:
        predictor.use_onnx(onnx)
    loaded, full = _eval_data(predictor.bundle.config, data, split, strict, images)
    data = _align(loaded, predictor.classes)
    if not data.records:
        raise DataError(f"{data.source}: no images to evaluate")
    table = group_table(groups, loaded, full) if groups is not None else None  # a bad CSV fails before inference
    masks = predictor.masks and data.has_masks
    preds = predictor.detect([r.source for r in data.records], progress=progress)
    summary = _score(data.records, preds, predictor.classes, masks)
    curves = summary.pop("pr_curves")
    mask_curves = summary.pop("segm_pr_curves", None)
    metrics = {**summary, "data": data.source, **({"onnx": str(onnx)} if onnx is not None else {})}
    if table is not None:
        def score(idx: np.ndarray) -> dict:
            scored = _score([data.records[int(i)] for i in idx], [preds[int(i)] for i in idx], predictor.classes, masks)
            return {k: v for k, v in scored.items() if not k.endswith("pr_curves")}

        metrics["per_group"] = group_report(score, table, HEADLINE, out_dir)
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
