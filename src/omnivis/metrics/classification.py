"""Classification metrics, confusion-matrix plots and training-curve plots.

Every number goes through ``torchmetrics.functional`` so evaluation reports the same values as the
metrics logged during training; this module only validates inputs and turns tensors into plain Python
values that ``json`` can write. Plots use ``matplotlib.figure.Figure`` directly (no pyplot global state,
no display needed) and are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from omnivis.fileio import atomic_write_bytes

__all__ = ["classification_metrics", "plot_confusion_matrix", "plot_training_curves"]

_ANNOTATE_MAX_CLASSES = 20


def _check_inputs(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> None:
    """Raise ValueError naming the shapes when probs, targets and classes disagree."""
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}")
    if targets.ndim != 1:
        raise ValueError(f"targets must have shape (N,), got {tuple(targets.shape)}")
    num_samples, num_classes = probs.shape
    if num_samples == 0 or targets.shape[0] == 0:
        raise ValueError("cannot compute metrics on empty input (N = 0)")
    if targets.shape[0] != num_samples:
        raise ValueError(
            f"probs and targets disagree on N: probs {tuple(probs.shape)}, targets {tuple(targets.shape)}"
        )
    if num_classes != len(classes):
        raise ValueError(f"probs has C = {num_classes} columns but {len(classes)} class names were given")
    if num_classes < 2:
        raise ValueError(f"multiclass metrics need at least 2 classes, got {num_classes}")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be floating point, got dtype {probs.dtype}")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes - 1}], found values in [{low}, {high}]")


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    """Compute multiclass metrics as a JSON-serializable dict.

    Macro averages follow torchmetrics (and scikit-learn): a class that is neither a target nor a
    prediction does not count in the average.

    Args:
        probs: (N, C) float class probabilities (logits are accepted; torchmetrics softmaxes them).
        targets: (N,) int64 true class indices in ``[0, C)``.
        classes: C class names, in column order.

    Returns:
        ``accuracy`` (top-1, micro), ``top5_accuracy`` (top-``min(5, C)``; trivially 1.0 when C <= 5),
        ``macro_precision``, ``macro_recall``, ``macro_f1``, ``per_class`` (name -> precision, recall, f1,
        support), ``confusion_matrix`` (rows = true class, columns = predicted, counts) and ``num_samples``.
    """
    _check_inputs(probs, targets, classes)
    probs = probs.detach().float().cpu()
    targets = targets.detach().long().cpu()
    num_classes = len(classes)
    common = {"preds": probs, "target": targets, "num_classes": num_classes}

    accuracy = multiclass_accuracy(**common, average="micro", top_k=1)
    top5 = multiclass_accuracy(**common, average="micro", top_k=min(5, num_classes))
    macro = {
        "macro_precision": multiclass_precision(**common, average="macro"),
        "macro_recall": multiclass_recall(**common, average="macro"),
        "macro_f1": multiclass_f1_score(**common, average="macro"),
    }
    precision = multiclass_precision(**common, average="none")
    recall = multiclass_recall(**common, average="none")
    f1 = multiclass_f1_score(**common, average="none")
    support = torch.bincount(targets, minlength=num_classes)
    confusion = multiclass_confusion_matrix(**common)

    per_class = {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(classes)
    }
    return {
        "accuracy": float(accuracy),
        "top5_accuracy": float(top5),
        **{key: float(value) for key, value in macro.items()},
        "per_class": per_class,
        "confusion_matrix": confusion.to(torch.int64).tolist(),
        "num_samples": int(targets.shape[0]),
    }


def _save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render a figure to PNG in memory and move it into place atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(
    confusion: list[list[int]] | np.ndarray,
    classes: list[str],
    path: str | Path,
    title: str = "Confusion matrix",
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix heat map (rows = true class, columns = predicted) to a PNG.

    With ``normalize`` the colours are row-normalized (recall per class), so rare classes are as readable
    as common ones; the annotations always show raw counts (when C <= 20, beyond which they are
    unreadable).

    Returns:
        The PNG path written.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    num_classes = len(classes)
    if matrix.ndim != 2 or matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"confusion must have shape (C, C) = ({num_classes}, {num_classes}) to match classes, "
            f"got {matrix.shape}"
        )
    if num_classes == 0:
        raise ValueError("cannot plot an empty confusion matrix")
    if normalize:
        row_sums = matrix.sum(axis=1, keepdims=True)
        colours = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)
        vmax = 1.0
    else:
        colours = matrix
        vmax = max(float(matrix.max()), 1.0)

    side = min(max(4.0, 0.45 * num_classes + 2.5), 24.0)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(colours, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of true class" if normalize else "count")

    ticks = np.arange(num_classes)
    rotate = num_classes > 6 or max((len(name) for name in classes), default=0) > 8
    ax.set_xticks(ticks, labels=classes, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)

    if num_classes <= _ANNOTATE_MAX_CLASSES:
        fontsize = 10 if num_classes <= 10 else 7
        for row in range(num_classes):
            for col in range(num_classes):
                shade = colours[row, col] / vmax
                ax.text(
                    col,
                    row,
                    f"{int(round(matrix[row, col]))}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if shade > 0.5 else "black",
                )
    fig.tight_layout()
    return _save_figure(fig, path)


def _read_metric_series(csv_path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Read a sparse Lightning ``metrics.csv`` into ``{metric: (steps, values)}``, finite numbers only."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row_index, row in enumerate(reader):
            step = _parse_float(row.get("step"))
            x = step if step is not None else float(row_index)
            for name, raw in row.items():
                if name is None or name in ("step", "epoch"):
                    continue
                value = _parse_float(raw)
                if value is None:
                    continue
                xs, ys = series.setdefault(name, ([], []))
                xs.append(x)
                ys.append(value)
    return series


def _parse_float(raw: object) -> float | None:
    """Parse a CSV cell to a finite float; empty or non-numeric cells are None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_learning_rate(name: str) -> bool:
    """Lightning's LearningRateMonitor logs ``lr-<Optimizer>``; learning rates get their own scale."""
    lowered = name.lower()
    return lowered == "lr" or lowered.startswith(("lr-", "lr_", "lr/")) or "learning_rate" in lowered


def plot_training_curves(csv_path: str | Path, path: str | Path) -> Path | None:
    """Plot every numeric metric of a Lightning CSVLogger ``metrics.csv`` against step.

    Losses share one panel, other metrics (accuracy, ...) another and learning rates (``lr-AdamW``) a
    third, since their scales differ by orders of magnitude. Rows are sparse (train and val metrics are logged on different rows), so each metric
    keeps only the rows where it has a value.

    Returns:
        The PNG path, or None when the file holds no numeric metric values.
    """
    series = _read_metric_series(Path(csv_path))
    if not series:
        return None
    losses = {name: data for name, data in series.items() if "loss" in name.lower()}
    rates = {name: data for name, data in series.items() if name not in losses and _is_learning_rate(name)}
    others = {name: data for name, data in series.items() if name not in losses and name not in rates}
    groups = (("loss", "losses", losses), ("metric", "metrics", others), ("learning rate", "learning rate", rates))
    panels = [(label, title, group) for label, title, group in groups if group]

    fig = Figure(figsize=(6.0 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, title, group) in zip(axes, panels):
        for name, (xs, ys) in group.items():
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, label=name, marker=marker, markersize=3, linewidth=1.4)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)
