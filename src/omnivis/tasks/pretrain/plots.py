"""Pictures a person checks after pretraining: an embedding map, or MAE reconstructions.

Both are drawn with matplotlib's object API (no pyplot global state, safe in threads and servers)
and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from omnivis.fileio import atomic_write_bytes


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_embeddings(
    embeddings: np.ndarray, labels: np.ndarray, classes: list[str], path: str | Path, title: str
) -> Path:
    """A 2-D PCA of (N, D) embeddings, coloured by label where labels exist (>= 0).

    Clusters that line up with classes, without the labels ever being used in training, are the
    quick sign that pretraining learned something.
    """
    from sklearn.decomposition import PCA

    points = PCA(n_components=2).fit_transform(embeddings) if len(embeddings) > 2 else np.zeros((len(embeddings), 2))
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    labelled = labels >= 0
    if labelled.any():
        cmap = "tab10" if len(classes) <= 10 else "tab20"
        scatter = ax.scatter(points[labelled, 0], points[labelled, 1], c=labels[labelled], cmap=cmap, s=10,
                             vmin=0, vmax=max(1, len(classes) - 1))
        if len(classes) <= 20:
            handles = [
                ax.scatter([], [], color=scatter.cmap(scatter.norm(i)), s=10, label=name) for i, name in enumerate(classes)
            ]
            ax.legend(handles=handles, fontsize=7, loc="best", markerscale=1.5)
    if (~labelled).any():
        ax.scatter(points[~labelled, 0], points[~labelled, 1], color="0.4", s=10, label="unlabeled")
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return _save(fig, Path(path))


def _to_display(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(B, C, H, W) normalized -> (B, H, W, C) in [0, 1]."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_reconstructions(
    original: torch.Tensor, masked: torch.Tensor, reconstructed: torch.Tensor,
    mean: tuple[float, ...], std: tuple[float, ...], path: str | Path, title: str,
) -> Path:
    """One row per image: original | masked input | reconstruction (each (B, C, H, W), normalized)."""
    columns = (("original", original), ("masked", masked), ("reconstruction", reconstructed))
    rows = original.shape[0]
    fig = Figure(figsize=(4.5, 1.5 * rows + 0.4), layout="constrained")
    fig.suptitle(title, fontsize=9)
    for col, (name, batch) in enumerate(columns):
        pictures = _to_display(batch, mean, std)
        for row in range(rows):
            ax = fig.add_subplot(rows, 3, row * 3 + col + 1)
            picture = pictures[row]
            if picture.shape[-1] == 1:
                ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=8)
    return _save(fig, Path(path))
