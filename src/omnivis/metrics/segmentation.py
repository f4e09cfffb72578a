"""Semantic-segmentation metrics (mIoU, Dice, pixel accuracy, per-class IoU) and the per-class IoU plot.

Everything is derived from one torchmetrics ``MulticlassConfusionMatrix`` accumulated over pixels
with ``ignore_index=255``, so batches of any size (and images of any size) add up exactly. A class
that appears neither in the targets nor in the predictions has no IoU (NaN) and is left out of the
means, the usual convention (Cityscapes, mmseg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from omnivis.data.masks import IGNORE_INDEX


def pixel_confusion(num_classes: int, ignore_index: int = IGNORE_INDEX) -> MulticlassConfusionMatrix:
    """The one stateful metric: a (K, K) pixel confusion matrix that skips ``ignore_index`` pixels.

    Feed it flattened class indices: ``update(preds.reshape(-1), target.reshape(-1))``.
    """
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)


def segmentation_metrics(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """One-shot metrics: preds (N, H, W) indices or (N, K, H, W) logits, target (N, H, W), 255 = ignore."""
    if preds.ndim == target.ndim + 1:
        preds = preds.argmax(dim=1)
    confusion = pixel_confusion(num_classes)
    confusion.update(preds.reshape(-1), target.reshape(-1).long())
    return confusion_to_metrics(confusion.compute())


def confusion_to_metrics(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """(K, K) confusion (rows = target, columns = prediction) -> mIoU, Dice, pixel accuracy and
    per-class IoU / Dice tensors (NaN where a class is absent from both targets and predictions)."""
    confusion = confusion.double()
    tp = confusion.diag()
    fp = confusion.sum(dim=0) - tp
    fn = confusion.sum(dim=1) - tp
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.full_like(tp, float("nan")))
    total = confusion.sum()
    return {
        "miou": iou.nanmean().float(),
        "dice": dice.nanmean().float(),
        "pixel_accuracy": (tp.sum() / total.clamp(min=1)).float(),
        "per_class_iou": iou.float(),
        "per_class_dice": dice.float(),
        "num_pixels": total.long(),
    }


def metrics_report(values: dict[str, torch.Tensor], classes: Sequence[str]) -> dict:
    """The tensors of :func:`confusion_to_metrics` as a JSON-ready dict (per-class rows by name)."""
    def number(x: torch.Tensor) -> float | None:
        return None if torch.isnan(x) else round(float(x), 6)

    return {
        "miou": number(values["miou"]),
        "dice": number(values["dice"]),
        "pixel_accuracy": number(values["pixel_accuracy"]),
        "num_pixels": int(values["num_pixels"]),
        "per_class": {
            name: {"iou": number(values["per_class_iou"][i]), "dice": number(values["per_class_dice"][i])}
            for i, name in enumerate(classes)
        },
    }


def plot_per_class_iou(per_class: dict[str, dict], path: str | Path, title: str = "IoU per class") -> Path:
    """A horizontal bar chart of each class's IoU (absent classes shown as 'n/a')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    values = [per_class[n]["iou"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [v or 0.0 for v in values], color="#3b7dd8")
    for i, v in enumerate(values):
        ax.text(min(v or 0.0, 0.9) + 0.01, i, "n/a" if v is None else f"{v:.3f}", va="center")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("IoU")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
