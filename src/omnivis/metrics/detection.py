"""Detection metrics: COCO mAP through torchmetrics (pycocotools backend) and PR-curve plots.

``MeanAveragePrecision`` with ``backend="pycocotools"`` runs COCOeval itself, so the numbers are
COCO's own (a test checks them against COCOeval run directly). The precision-recall curve per class
at IoU 0.5 comes from COCOeval's accumulated ``precision`` array (IoU x recall x class x area x
max-dets), which ``extended_summary`` exposes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from omnivis.fileio import atomic_write_bytes

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds


def new_map_metric(masks: bool = False):
    """A torchmetrics ``MeanAveragePrecision`` over boxes (and instance masks when ``masks``)."""
    from torchmetrics.detection import MeanAveragePrecision

    iou_type = ("bbox", "segm") if masks else "bbox"
    return MeanAveragePrecision(
        box_format="xyxy", iou_type=iou_type, backend="pycocotools", class_metrics=True, extended_summary=True
    )


def _value(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def summarize_map(result: dict, classes: Sequence[str], masks: bool = False) -> dict:
    """torchmetrics' result -> our metric names.

    Returns:
        ``map`` (mAP@[.5:.95]), ``map50``, ``map75``, ``map_small/medium/large``, ``mar100``,
        ``per_class`` {name: {"ap", "ap50"}}, with ``segm_`` versions for masks, and
        ``pr_curves`` {name: (101,) precision at COCO's recall points, IoU 0.5} (box), and for
        masks ``segm_pr_curves`` likewise.
    """
    out: dict = {}
    prefixes = (("bbox_", ""), ("segm_", "segm_")) if masks else (("", ""),)
    for src, dst in prefixes:
        out[f"{dst}map"] = _value(result[f"{src}map"])
        out[f"{dst}map50"] = _value(result[f"{src}map_50"])
        out[f"{dst}map75"] = _value(result[f"{src}map_75"])
        for size in ("small", "medium", "large"):
            out[f"{dst}map_{size}"] = _value(result[f"{src}map_{size}"])
        out[f"{dst}mar100"] = _value(result[f"{src}mar_100"])
    box = "bbox_" if masks else ""
    precision = result[f"{box}precision"]  # (T, R, K, A, M); -1 where a class has no ground truth
    precision = precision.numpy() if isinstance(precision, torch.Tensor) else np.asarray(precision)
    ids = [int(i) for i in torch.as_tensor(result["classes"]).reshape(-1).tolist()]
    per_class: dict = {}
    curves: dict = {}
    segm_curves: dict = {}
    for k, cid in enumerate(ids):
        name = classes[cid - 1] if 1 <= cid <= len(classes) else str(cid)
        curve = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
        ap = precision[:, :, k, 0, -1]
        row = {
            "ap": float(ap[ap > -1].mean()) if (ap > -1).any() else -1.0,
            "ap50": float(curve[curve > -1].mean()) if (curve > -1).any() else -1.0,
        }
        if masks:
            segm = result["segm_precision"]
            segm = segm.numpy() if isinstance(segm, torch.Tensor) else np.asarray(segm)
            s = segm[:, :, k, 0, -1]
            row["segm_ap"] = float(s[s > -1].mean()) if (s > -1).any() else -1.0
            segm_curves[name] = np.where(s[0] > -1, s[0], 0.0)
        per_class[name] = row
        curves[name] = np.where(curve > -1, curve, 0.0)
    out["per_class"] = per_class
    out["pr_curves"] = curves
    if masks:
        out["segm_pr_curves"] = segm_curves
    return out


def plot_pr_curves(curves: dict[str, np.ndarray], path: str | Path, title: str = "Precision-recall (IoU 0.5)") -> Path:
    """One line per class: COCO-interpolated precision against recall at IoU 0.5, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, curve in curves.items():
        ax.plot(RECALL_POINTS, curve, label=f"{name} (AP50 {float(np.mean(curve)):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
