"""Membership-inference numbers: how well a score tells training images from held-out ones.

The score is a loss-threshold attack's (Yeom et al. 2018): a low loss says "member". The AUC of
``-loss`` is the attack's success over every threshold (0.5: chance, 1: every member found), the
advantage is the best threshold's TPR - FPR (what DP bounds: an (epsilon, delta)-DP model allows at
most ``(e^epsilon - 1 + 2 delta) / (e^epsilon + 1)``),
and the TPR at 1% FPR says how many members an attacker finds while rarely wrong (Carlini et al. 2022).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve


def attack_metrics(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> dict:
    """AUC, advantage (max TPR - FPR) and TPR at 1% FPR of the attack "member when loss < threshold".

    Args:
        member_loss: (M,) per-image losses of training images.
        nonmember_loss: (K,) per-image losses of images the model never trained on.
    """
    truth = np.concatenate([np.ones(len(member_loss)), np.zeros(len(nonmember_loss))])
    score = -np.concatenate([member_loss, nonmember_loss])
    fpr, tpr, _ = roc_curve(truth, score)
    low = tpr[fpr <= 0.01]
    return {
        "auc": float(roc_auc_score(truth, score)),
        "advantage": float(np.max(tpr - fpr)),
        "tpr_at_1pct_fpr": float(low.max()) if len(low) else 0.0,
        "members": int(len(member_loss)),
        "nonmembers": int(len(nonmember_loss)),
        "member_mean_loss": float(np.mean(member_loss)),
        "nonmember_mean_loss": float(np.mean(nonmember_loss)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }


def plot_roc(metrics: dict, path: str | Path, title: str = "membership inference (loss threshold)") -> Path:
    """The attack's ROC curve against the chance diagonal, as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], label=f"attack (AUC {metrics['auc']:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate (held-out called member)")
    axes.set_ylabel("true positive rate (member found)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right")
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path
