"""Pictures of a face evaluation: the ROC curve, the hardest pairs, and one HTML report with both.

The hardest pairs (genuine pairs scored lowest, impostor pairs scored highest) are what a person
looks at first to see why a model fails: lighting, pose, glasses, or a labelling error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnivis.metrics.face import FARS, roc_curve
from omnivis.metrics.report import ReportSection, write_html_report

HARDEST = 6


def plot_roc(scores: np.ndarray, same: np.ndarray, path: Path, threshold: float | None = None) -> Path:
    """TAR against FAR on a log axis (where the operating points live), with the FAR marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = roc_curve(scores, same)
    fig, ax = plt.subplots(figsize=(5, 4))
    floor = 1.0 / max(1, int((~same).sum()))
    ax.plot(np.maximum(fpr, floor), tpr, lw=2)
    for far in FARS:
        if far >= floor:
            ax.axvline(far, color="grey", lw=0.6, ls=":")
    if threshold is not None:
        accepted = scores >= threshold
        ax.plot([max(accepted[~same].mean(), floor)], [accepted[same].mean()], "o", color="crimson",
                label=f"threshold {threshold:.3f}")
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("verification ROC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_hardest_pairs(sources: list, pairs, scores: np.ndarray, path: Path) -> Path:
    """Two rows: the genuine pairs scored lowest, the impostor pairs scored highest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from omnivis.data.images import load_images

    genuine = np.flatnonzero(pairs.same)[np.argsort(scores[pairs.same])][:HARDEST]
    impostor = np.flatnonzero(~pairs.same)[np.argsort(-scores[~pairs.same])][:HARDEST]
    rows = [("same person, lowest scores", genuine), ("different people, highest scores", impostor)]
    cols = max(len(genuine), len(impostor), 1)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 5.0), squeeze=False)
    for r, (title, chosen) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(chosen):
                continue
            k = chosen[c]
            a, b = load_images([sources[pairs.first[k]], sources[pairs.second[k]]], "RGB")
            height = 96
            a = a.resize((max(1, a.width * height // a.height), height))
            b = b.resize((max(1, b.width * height // b.height), height))
            ax.imshow(np.concatenate([np.asarray(a), np.asarray(b)], axis=1))
            ax.set_title(f"{scores[k]:.3f}", fontsize=9)
        axes[r][0].text(0, -0.25, title, transform=axes[r][0].transAxes, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_face_report(out_dir: Path, evalset, scores: np.ndarray, metrics: dict) -> dict:
    """``roc.png``, ``hardest_pairs.png`` and ``face_report.html`` in ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    roc = plot_roc(scores, evalset.pairs.same, out_dir / "roc.png", metrics.get("threshold"))
    hardest = plot_hardest_pairs(evalset.sources, evalset.pairs, scores, out_dir / "hardest_pairs.png")
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sections = [
        ReportSection("Verification", f"{metrics['pairs']} pairs of {metrics['images']} photos from {metrics['data']}",
                      table=numbers, images=[("ROC", roc)]),
        ReportSection("Hardest pairs", "Top: the same person scored lowest. Bottom: two people scored highest.",
                      images=[("hardest pairs", hardest)]),
    ]
    groups = (metrics.get("per_group") or {}).get("groups")
    if groups:
        rows = [{"group": g, **{k: v for k, v in row.items() if k in ("pairs", "auc", "eer", "tar_at_far_0.01")}}
                for g, row in groups.items()]
        sections.append(ReportSection("Per group", "largest gap: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics["per_group"]["largest_gap"].items()), rows=rows))
    report = write_html_report(out_dir / "face_report.html", "face verification", sections)
    return {"roc_png": str(roc), "hardest_pairs_png": str(hardest), "report_html": str(report)}
