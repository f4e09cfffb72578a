"""The picture of a text search: a few queries, each with the images it ranks best.

A recall figure says how often the right image is near the top; the picture shows what the model
confuses (a green frame: the image carries the query's caption; red: it does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

QUERIES = 6
SHOWN = 5


def plot_retrieval(data, image_vectors: torch.Tensor, captions: Sequence[str], text_vectors: torch.Tensor,
                   path: str | Path, queries: int = QUERIES, shown: int = SHOWN) -> Path:
    """Rows of (query, its ``shown`` best images) for ``queries`` captions spread over the list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from omnivis.data.images import load_images

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picks = np.unique(np.linspace(0, len(captions) - 1, min(queries, len(captions))).round().astype(int))
    cols = min(shown, len(data))
    fig, axes = plt.subplots(len(picks), cols, figsize=(1.6 * cols + 2.6, 1.7 * len(picks)), squeeze=False)
    for r, q in enumerate(picks):
        scores = image_vectors @ text_vectors[q]
        best = scores.topk(cols).indices.tolist()
        pictures = load_images([data.samples[i].source for i in best], "RGB")
        for c, (i, picture) in enumerate(zip(best, pictures)):
            ax = axes[r][c]
            ax.imshow(np.asarray(picture), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = captions[q] in data.samples[i].captions
            for spine in ax.spines.values():
                spine.set_edgecolor("#1a9850" if hit else "#d73027")
                spine.set_linewidth(3)
            ax.set_title(f"{float(scores[i]):.2f}", fontsize=8)
        axes[r][0].set_ylabel(captions[q][:40], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("text search on held-out images (green: carries the query's caption)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_queries(searches: Sequence[dict], path: str | Path) -> Path:
    """``omnivis search --out``: one row per query (``{"query", "results": [{"image", "score"}]}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from omnivis.data.images import load_images

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = max(1, max(len(s["results"]) for s in searches))
    fig, axes = plt.subplots(len(searches), cols, figsize=(1.8 * cols + 2.6, 1.9 * len(searches)), squeeze=False)
    for r, search in enumerate(searches):
        pictures = load_images([hit["image"] for hit in search["results"]], "RGB")
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(pictures):
                ax.imshow(np.asarray(pictures[c]), interpolation="nearest")
                ax.set_title(f"{search['results'][c]['score']:.2f}", fontsize=8)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(search["query"][:40], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
