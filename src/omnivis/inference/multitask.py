"""Using a multi-task bundle: ``MultitaskPredictor`` (a class, a mask and boxes per image, whichever
heads the bundle has) and ``evaluate_multitask`` (each head's metrics on one pass).

Imports torch, timm and the model only: predicting does not import Lightning or the training code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.detection import write_coco_results
from omnivis.data.images import load_images
from omnivis.data.masks import to_tv_tensors
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
from omnivis.bundle import Bundle
from omnivis.deploy.graphs import DETECTION_OUTPUTS, MultitaskGraph
from omnivis.errors import DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.metrics.fairness import GroupTable, group_report, read_group_table
from omnivis.metrics.masks import (
    mask_results,
    mask_summary,
    palette_for,
    write_mask_pictures,
)
from omnivis.metrics.report import write_json
from omnivis.models.backbones import Backbone, create_backbone
from omnivis.models.multitask import DEFAULT_TASKS, MultiTaskModel

TASK = "multitask"
_MIN_DRAW_SIDE = 256  # small images are drawn enlarged (nearest) so box labels can be read
TASKS = DEFAULT_TASKS  # what a bundle without a "tasks" key (made before detection joined) holds


def model_from_config(cfg: dict, backbone: Backbone) -> MultiTaskModel:
    """The model a bundle config describes (one without ``tasks`` predates detection: classify + segment)."""
    return MultiTaskModel(
        backbone, len(cfg["classes"]), len(cfg["seg_classes"]), arch=cfg["arch"], decoder_width=int(cfg["decoder_width"]),
        tasks=tuple(cfg.get("tasks", TASKS)), num_det_classes=len(cfg.get("det_classes", cfg["classes"])),
        img_size=int(cfg["img_size"]), fpn_channels=int(cfg.get("fpn_channels", 64)),
    )


def _absolute(path: str | None) -> str | None:
    """A user path as an absolute one, so ``omnivis eval BUNDLE`` finds the data from any folder."""
    return str(Path(path).expanduser().resolve()) if path is not None else None


class MultitaskPredictor(Predictor):
    """Rebuilds the multi-head model from a bundle; predicts a class, a mask and boxes per image
    (whichever of them the bundle's ``tasks`` hold)."""

    task = TASK
    noun = "multitask model"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        cfg = self.config
        self.tasks: tuple[str, ...] = tuple(cfg.get("tasks", TASKS))
        self.seg_classes: list[str] = list(cfg["seg_classes"])
        self.det_classes: list[str] = list(cfg.get("det_classes", cfg["classes"]))
        self.score_threshold = float(cfg.get("score_threshold", 0.5))
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = self.ready(model_from_config(cfg, backbone))
        self.graph = MultitaskGraph(self.model, cfg["mean"], cfg["std"]).eval().to(self.device)
        self.geometry = v2.Resize((self.img_size, self.img_size), antialias=True)
        self._last: dict[str, np.ndarray] = {}

    def preprocess(self, image) -> torch.Tensor:
        """PIL image -> (C, S, S) uint8 tensor, the graph's input (resize only)."""
        tensor, _ = to_tv_tensors(image, np.zeros((1, 1), np.uint8))
        return self.geometry(tensor).as_subclass(torch.Tensor)

    def prepare(self, images: Sequence) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> the graph's input, uint8 (N, C, S, S)."""
        return torch.stack([self.preprocess(im) for im in load_images(images, self.mode)])

    def _graph_answers(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The graph's outputs (torch or the ONNX file) by name, one dict per image: one call for the
        whole batch, or with a detection head one ONNX call per image."""
        names = self.graph.output_names
        if self.graph.batched:
            outputs = self.run_graph(batch)
            return [{name: out[i] for name, out in zip(names, outputs)} for i in range(len(batch))]
        if self.session is None:  # torch: the batch in one model call
            with torch.inference_mode():
                return [{name: out.cpu() for name, out in answer.items()}
                        for answer in self.graph.answers(batch.to(self.device))]
        answers = []
        for image in batch:
            outputs = dict(zip(names, self.run_graph(image[None])))
            answers.append({name: out if name in DETECTION_OUTPUTS else out[0] for name, out in outputs.items()})
        return answers

    @torch.inference_mode()
    def predict_outputs(self, images: Sequence, batch_size: int = 32, progress: bool = False) -> dict:
        """Images -> the outputs of the bundle's tasks.

        Returns:
            ``{"classify": (N, K) class probabilities, "segment": one (H, W) uint8 mask per image at
            its own size, "detect": one ``{"boxes" (M, 4) xyxy in original pixels, "scores" (M,),
            "labels" (M,) class indices}`` per image, all scores >= 0.05}``, keys for ``tasks`` only.
        """
        probs, masks, boxes = [], [], []
        for pil in self.batches(images, batch_size, progress):
            batch = torch.stack([self.preprocess(im) for im in pil])
            for im, answer in zip(pil, self._graph_answers(batch)):
                if "classify" in self.tasks:
                    probs.append(answer["probabilities"][None].float().cpu())
                if "segment" in self.tasks:
                    mask = answer["classes"]
                    if mask.shape != (im.height, im.width):
                        logit = F.interpolate(answer["logits"][None].float(), size=(im.height, im.width),
                                              mode="bilinear", align_corners=False)[0]
                        mask = logit.argmax(dim=0).to(torch.uint8)
                    masks.append(mask.cpu().numpy())
                if "detect" in self.tasks:
                    sx, sy = im.width / batch.shape[-1], im.height / batch.shape[-2]
                    boxes.append({"boxes": answer["boxes"].float().cpu() * torch.tensor([sx, sy, sx, sy]),
                                  "scores": answer["scores"].float().cpu(), "labels": answer["det_classes"].cpu()})
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
        names = image_names(images, names)
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
    groups: str | Path | None = None,
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
        groups: a ``path,group`` CSV of the evaluated images: every metric per group, with the gaps
            (``per_group``; see ``omnivis.metrics.fairness``), and ``per_group.png`` in ``out_dir``.
    """
    predictor = MultitaskPredictor.from_dir(bundle_dir)
    cfg = predictor.config
    full = data
    if not isinstance(data, MultitaskData):
        data, full = _eval_data(cfg, data, split, strict, predictor.img_size, images, labels)
    data = align_classes(data, predictor.classes if data.classes else [], predictor.det_classes)
    table = group_table(groups, data, full) if groups is not None else None  # a bad CSV fails before inference
    outputs = predictor.predict_outputs(data.images, progress=progress)
    metrics = _score(outputs, data, predictor, out_dir)
    metrics["num_images"] = len(data)
    metrics["data"] = data.source
    if table is not None:
        def score(idx: np.ndarray) -> dict:
            picked = {k: v[torch.from_numpy(idx)] if isinstance(v, torch.Tensor) else [v[int(i)] for i in idx]
                      for k, v in outputs.items()}
            return {**_score(picked, data.subset(idx), predictor, None), "num_images": len(idx)}

        metrics["per_group"] = group_report(score, table, HEADLINE, out_dir)
    if out_dir is not None:
        metrics.update(_write_scored(outputs, data, predictor, Path(out_dir)))
    return metrics


HEADLINE = ("accuracy", "miou", "map")


def group_table(groups: str | Path, data: MultitaskData, full: MultitaskData) -> GroupTable:
    """The group of each scored image (its COCO ``file_name`` or built-in name, or its image file);
    rows naming the rest of ``full`` (the training split) are skipped."""
    names = [data.name(i) for i in range(len(data))]
    sources = [im if isinstance(im, (str, Path)) else None for im in data.images]
    scored = set(names)
    outside = [(full.name(i), full.images[i]) for i in range(len(full)) if full.name(i) not in scored]
    return read_group_table(groups, names, sources, outside)


def _score(outputs: dict, data: MultitaskData, predictor: MultitaskPredictor, out_dir: str | Path | None) -> dict:
    """Each head's metrics on ``data`` (all the evaluated images, or a group of them) from its outputs."""
    # metrics (torchmetrics) are imported to evaluate, not to predict
    from omnivis.metrics.segmentation import confusion_to_metrics, metrics_report, pixel_confusion, plot_per_class_iou

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
    return metrics


def _write_scored(outputs: dict, data: MultitaskData, predictor: MultitaskPredictor, out_dir: Path) -> dict:
    """What was scored, so another tool can re-score it: per image its class prediction
    (``eval_predictions.json``, image id = position), masks and boxes as COCO results JSON."""
    written: dict = {}
    rows: list[dict] = [{"image_id": i, "image": data.name(i)} for i in range(len(data))]
    if "classify" in outputs:
        for row, probs, label in zip(rows, outputs["classify"], data.labels):
            row.update(prediction=predictor.classes[int(probs.argmax())], score=round(float(probs.max()), 6),
                       label=predictor.classes[label] if label >= 0 else None)
    written["predictions_json"] = str(write_json(rows, out_dir / "eval_predictions.json"))
    if "segment" in outputs:
        masks = [r for i, m in enumerate(outputs["segment"]) for r in mask_results(i, m, len(predictor.seg_classes))]
        written["masks_json"] = str(write_json(masks, out_dir / "eval_masks.json"))
    if "detect" in outputs:
        boxes = [{"image_id": i, "boxes": d["boxes"].numpy(), "scores": d["scores"].numpy(),
                  "category_ids": (d["labels"] + 1).tolist()} for i, d in enumerate(outputs["detect"])]
        written["detections_json"] = str(write_coco_results(boxes, out_dir / "eval_detections.json"))
    return written


def _eval_data(cfg: dict, data: str | None, split: str, strict: bool, img_size: int,
               images: str | Path | None, labels: str | Path | None) -> tuple[MultitaskData, MultitaskData]:
    """What ``data`` + ``split`` name, loaded: the shapes scenes or (part of) a COCO file; and the data
    it was drawn from (the whole file when a held-out split is scored)."""
    spec = data if data is not None else cfg.get("data", "builtin:shapes")
    same = not is_builtin_shapes(cfg.get("data", "")) and _absolute(str(spec)) == cfg.get("data")
    held_out = held_out_wanted(split, _absolute(str(spec)) if same else str(spec), cfg.get("data"))
    if is_builtin_shapes(spec):
        s = cfg["split"]
        if "val_seed" not in s:
            raise DataError(f"{spec}: this bundle was trained on {cfg['data']}, whose classes the shapes do not have")
        loaded = load_shapes_multitask(s.get("val_images") or 200, img_size, s["val_seed"])
        if split == "all":
            loaded = load_shapes_multitask(s["train_size"], img_size, s["train_seed"]) + loaded
        return loaded, loaded
    if not str(spec).lower().endswith(".json"):
        raise DataError(f"{spec}: a multitask model is evaluated on builtin:shapes or a COCO JSON file")
    if same:
        images = images if images is not None else cfg.get("images")
        labels = labels if labels is not None else cfg.get("labels")
    loaded = full = load_coco_multitask(spec, images, labels, strict=strict)
    if held_out:
        s = cfg["split"]
        if "val_fraction" not in s:
            raise DataError(f"{spec}: the bundle was trained on {cfg.get('data')}; use --split all for this file")
        _, val_idx = split_indices(len(loaded), s["val_fraction"], s["seed"], method="permutation")
        if not len(val_idx):
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
        loaded = loaded.subset(val_idx)
    return loaded, full


def _detection_metrics(preds: list[dict], data: MultitaskData, classes: list[str], out_dir: str | Path | None) -> dict:
    """COCO box mAP over the images that have box labels (metrics/detection.py's metric and names)."""
    # metrics (torchmetrics) are imported to evaluate, not to predict
    from omnivis.metrics.detection import new_map_metric, plot_pr_curves, summarize_map

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
