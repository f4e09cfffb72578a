"""Using a classifier bundle: ``ClassifyPredictor`` (top-k classes with probabilities) and
``evaluate_classifier`` (accuracy, top-5, P/R/F1, confusion matrix, per-image predictions).

Imports torch, timm and the model only: predicting does not import Lightning or the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from omnivis.bundle import Bundle
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.decode import decode_tensor
from omnivis.data.readers import ClassificationData
from omnivis.data.splits import split_indices
from omnivis.data.transforms import build_eval_geometry
from omnivis.deploy.graphs import ClassifierGraph
from omnivis.errors import DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.metrics.fairness import GroupTable, group_report, read_group_table
from omnivis.metrics.report import write_json
from omnivis.models.backbones import create_backbone
from omnivis.models.heads import ImageClassifier

TASK = "classify"


def class_split(data: ClassificationData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded, stratified held-out split; evaluation re-derives it from the bundle's record."""
    return split_indices(data.labels(), val_fraction, seed=seed, stratify=True)


class ClassifyPredictor(Predictor):
    """Rebuilds a classifier from a bundle and predicts top-k classes with probabilities."""

    task = TASK
    noun = "classifier"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        cfg = self.config
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size,
                                   output_stride=cfg.get("output_stride"))
        model = ImageClassifier(backbone, len(self.classes))
        if cfg.get("batchnorm_to_groupnorm"):  # trained with differential privacy: the same swap as training's
            from omnivis.models.private import dp_compatible

            model = dp_compatible(model)
        self.model = self.ready(model)
        self.graph = ClassifierGraph(self.model, cfg["mean"], cfg["std"], len(self.classes)).eval().to(self.device)
        self.geometry = build_eval_geometry(self.img_size)

    def prepare(self, images: Sequence) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> the graph's input, uint8 (N, C, S, S)."""
        return self.fit([decode_tensor(im, self.mode) for im in images])

    def fit(self, decoded: list[torch.Tensor]) -> torch.Tensor:
        """(C, H, W) uint8 images -> (N, C, S, S). Images of one size are resized as one batch: the
        same pixels as one at a time, without the per-call overhead (it dominated serving small images)."""
        groups: dict[tuple, list[int]] = {}
        for i, image in enumerate(decoded):
            groups.setdefault(tuple(image.shape), []).append(i)
        fitted: list[torch.Tensor] = [torch.empty(0)] * len(decoded)
        for indices in groups.values():
            batch = self.geometry(torch.stack([decoded[i] for i in indices])).as_subclass(torch.Tensor)
            for row, i in zip(batch, indices):
                fitted[i] = row
        return torch.stack(fitted)

    def predict_proba(self, images: Sequence, batch_size: int = 128, progress: bool = False) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> (N, C) class probabilities."""
        out = []
        for decoded in self.batches(images, batch_size, progress, tensors=True):
            batch = self.fit(decoded)
            out.append(self.run_graph(batch)[0].float())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """Top-k predictions: ``[{"image", "label", "score", "top_k": [{"label", "score"}, ...]}]``."""
        probs = self.predict_proba(images)
        k = min(top_k, len(self.classes))
        scores, indices = probs.topk(k, dim=1)
        results = []
        for name, s, idx in zip(image_names(images, names), scores.tolist(), indices.tolist()):
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
    onnx: str | Path | None = None,
    groups: str | Path | None = None,
) -> dict:
    """Metrics of a classifier bundle on labelled data, plus a confusion-matrix PNG in ``out_dir``.

    Args:
        data: a data spec, loaded data, or None for the data the bundle was trained on.
        split: ``val`` (the bundle's own held-out split), ``all``, or ``auto``: ``val`` when ``data``
            is the training data, else ``all``.
        onnx: score this exported file (``omnivis export``) with onnxruntime instead of the torch model.
        groups: a ``path,group`` CSV of the evaluated images: every metric per group, with the gaps
            (``per_group``; see ``omnivis.metrics.fairness``), and ``per_group.png`` in ``out_dir``.
    """
    # metrics (torchmetrics) are imported to evaluate, not to predict
    from omnivis.metrics.classification import (
        classification_metrics,
        plot_confusion_matrix,
    )

    predictor = ClassifyPredictor.from_dir(bundle_dir)
    if onnx is not None:
        predictor.use_onnx(onnx)
    cfg = predictor.config
    full = data  # what a held-out split was drawn from: --groups rows for the rest of it are skipped
    if not isinstance(data, ClassificationData):
        spec = data or cfg["data"]
        manifest = cfg.get("manifest") if spec == cfg.get("data") else None
        held_out = held_out_wanted(split, spec, cfg.get("data"))
        loaded = full = resolve_classification_data(spec, manifest=manifest, strict=strict)
        if held_out:
            s = cfg["split"]
            _, val_idx = class_split(loaded, s["val_fraction"], s["seed"])
            if not len(val_idx):
                raise DataError(f"{spec}: the bundle was trained without a held-out split; use --split all")
            loaded = loaded.subset(val_idx)
        data = loaded
    data = _align_classes(data, predictor.classes)
    labelled = [i for i, s in enumerate(data.samples) if s.label >= 0]
    if not labelled:
        raise DataError(f"{data.source}: no labelled images to evaluate")
    samples = [data.samples[i] for i in labelled]
    table = _group_table(groups, samples, full) if groups is not None else None  # a bad CSV fails before inference
    probs = predictor.predict_proba([s.source for s in samples], progress=progress)
    targets = torch.tensor([s.label for s in samples], dtype=torch.long)
    metrics = classification_metrics(probs, targets, predictor.classes)
    metrics["data"] = data.source
    if onnx is not None:
        metrics["onnx"] = str(onnx)
    if table is not None:
        metrics["per_group"] = _per_group(table, probs, targets, predictor.classes, out_dir)
    if out_dir is not None:
        path = plot_confusion_matrix(metrics["confusion_matrix"], predictor.classes, Path(out_dir) / "confusion_matrix.png")
        metrics["confusion_matrix_png"] = str(path)
        scored = [
            {"image": str(s.source) if isinstance(s.source, (str, Path)) else s.name, "label": predictor.classes[s.label],
             "prediction": predictor.classes[int(p.argmax())], "score": round(float(p.max()), 6),
             "probabilities": [round(float(v), 6) for v in p]}
            for s, p in zip(samples, probs)
        ]
        metrics["predictions_json"] = str(write_json(scored, Path(out_dir) / "eval_predictions.json"))
    return metrics


HEADLINE = ("accuracy", "macro_f1")


def _group_table(groups: str | Path, samples: list, full: ClassificationData) -> GroupTable:
    """The group of each evaluated sample; rows naming the rest of ``full`` (another split) are skipped."""
    evaluated = {s.name for s in samples}
    outside = [(s.name, s.source) for s in full.samples if s.name not in evaluated]
    return read_group_table(groups, [s.name for s in samples], [s.source for s in samples], outside)


def _per_group(table: GroupTable, probs: torch.Tensor, targets: torch.Tensor, classes: list[str],
               out_dir: str | Path | None) -> dict:
    """``classification_metrics`` on each group's images: the figures ``eval`` gives on that subset."""
    from omnivis.metrics.classification import classification_metrics

    def score(idx: np.ndarray) -> dict:
        index = torch.from_numpy(idx)
        return classification_metrics(probs[index], targets[index], classes)

    return group_report(score, table, HEADLINE, out_dir)
