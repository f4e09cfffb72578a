"""``omnivis audit membership``: does a classifier give away which images it was trained on?

A loss-threshold membership-inference attack on a classify bundle. Members are its training images,
non-members its held-out split, both re-derived from the split the bundle recorded (``class_split``),
so the audit needs nothing but the bundle and its data. The two sets are balanced (equal counts,
drawn with ``seed``), so an AUC of 0.5 means the model's losses say nothing about membership.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnivis.bundle import load_bundle
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.readers import ClassificationData
from omnivis.errors import BundleError, DataError
from omnivis.inference.classify import TASK, ClassifyPredictor, class_split
from omnivis.metrics.membership import attack_metrics, plot_roc
from omnivis.metrics.report import write_json

ROC_PNG = "membership_roc.png"
REPORT = "membership.json"


def per_image_loss(predictor: ClassifyPredictor, data: ClassificationData, progress: bool = False) -> np.ndarray:
    """(N,) cross-entropy of the model on each image of ``data`` (labels in the model's class order)."""
    probs = predictor.predict_proba([s.source for s in data.samples], progress=progress)
    labels = torch.tensor([s.label for s in data.samples], dtype=torch.long)
    chosen = probs.gather(1, labels[:, None]).squeeze(1).double()
    return (-torch.log(chosen.clamp_min(1e-12))).numpy()


def membership_split(bundle_dir: str | Path, data: str | None = None, strict: bool = False,
                     seed: int = 0) -> tuple[ClassificationData, ClassificationData]:
    """(members, non-members): equal numbers of the bundle's training and held-out images.

    Args:
        data: the training data, if it has moved since training (default: what the bundle records).
        seed: which images are kept from the larger side.
    """
    bundle = load_bundle(bundle_dir)
    if bundle.task != TASK:
        raise BundleError(f"{bundle_dir}: is a '{bundle.task}' bundle; the membership audit scores classify bundles")
    cfg = bundle.config
    spec = data or cfg.get("data")
    split = cfg.get("split") or {}
    if not spec or not split:
        raise BundleError(f"{bundle_dir}: records no training data and split, so its members cannot be re-derived")
    manifest = cfg.get("manifest") if spec == cfg.get("data") else None
    loaded = resolve_classification_data(spec, manifest=manifest, strict=strict)
    if loaded.classes != list(cfg.get("classes") or []):
        raise DataError(f"{spec}: its classes differ from the bundle's, so it is not the data the bundle was "
                        "trained on; pass that data with --data")
    train_idx, val_idx = class_split(loaded, split["val_fraction"], split["seed"])
    if not len(val_idx):
        raise DataError(f"{bundle_dir}: was trained without a held-out split (val_fraction 0), so there are no "
                        "non-members to compare with; train with --val-fraction above 0 to audit it")
    if split.get("train_size") not in (None, len(train_idx)):
        raise DataError(f"{spec}: gives {len(train_idx)} training images, the bundle was trained on "
                        f"{split['train_size']}; pass the data it was trained on with --data")
    count = min(len(train_idx), len(val_idx))
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(train_idx, size=count, replace=False))
    nonmembers = np.sort(rng.choice(val_idx, size=count, replace=False))
    return loaded.subset(members), loaded.subset(nonmembers)


def audit_membership(bundle_dir: str | Path, data: str | None = None, out_dir: str | Path | None = None,
                     strict: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """The loss-threshold attack on a classify bundle (``metrics.membership.attack_metrics``), with
    ``membership.json`` and ``membership_roc.png`` written into ``out_dir`` (default: the bundle)."""
    members, nonmembers = membership_split(bundle_dir, data, strict, seed)
    predictor = ClassifyPredictor.from_dir(bundle_dir)
    metrics = attack_metrics(per_image_loss(predictor, members, progress),
                             per_image_loss(predictor, nonmembers, progress))
    privacy = predictor.config.get("dp") or {}
    metrics.update({"bundle": str(bundle_dir), "data": members.source, "seed": seed,
                    "dp_epsilon": privacy.get("epsilon")})
    out = Path(out_dir or bundle_dir)
    metrics["roc_png"] = str(plot_roc(metrics, out / ROC_PNG))
    write_json(metrics, out / REPORT)
    return metrics
