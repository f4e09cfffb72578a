"""Representation evaluation ("probing"): how good are a frozen backbone's features?

A pretrained bundle is only worth something if its features beat those of a randomly initialized
backbone of the same architecture, so :func:`probe` measures both the same way:

1. split the labelled data with the one ``split_indices`` (digits: test 0.3, seed 0, the split of
   scikit-learn's ``train_test_split(test_size=0.3, stratify=y, random_state=0)``);
2. recalibrate batch-norm statistics on the *training* images
   (:func:`omnivis.models.features.recalibrate_batchnorm`);
3. extract frozen pooled features (``Backbone.forward_pooled``, eval mode) once, and score them with
   a cosine kNN classifier, a linear probe (logistic regression on all training features) and,
   with ``shots``, linear probes on ``shots`` labelled images per class over several random draws.

:func:`raw_pixel_baseline` runs the same linear and k-shot protocol on flattened pixels, the
reference a learned representation has to beat at all.

The feature helpers (image batches, batch-norm reset and recalibration, extraction) live in
:mod:`omnivis.models.features`, the scoring (kNN, linear, k-shot) in :mod:`omnivis.metrics.representation`;
both are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch

from omnivis.data.builtin import resolve_classification_data
from omnivis.data.images import load_images
from omnivis.data.readers import ClassificationData
from omnivis.data.splits import split_indices
from omnivis.data.transforms import build_eval_transform, default_mean_std
from omnivis.bundle import load_bundle
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.metrics.representation import (  # noqa: F401  (re-exported: scoring lives in metrics)
    KNN_TEMPERATURE,
    LINEAR_MAX_ITER,
    check_shots,
    evaluate_features,
    knn_accuracy,
    kshot_indices,
    linear_probe_accuracy,
)
from omnivis.models.backbones import Backbone, create_backbone
from omnivis.models.features import (
    extract_features,
    image_batches,
    recalibrate_batchnorm,
    reset_zero_init_scales,
)
from omnivis.seeding import mix_seed

DEFAULT_IMG_SIZE = 32
DEFAULT_CHANNELS = 3


@dataclass
class ProbeModel:
    """A backbone ready to probe, with the preprocessing its weights expect.

    Attributes:
        backbone: the frozen feature extractor.
        img_size: square input size.
        in_chans: 1 (grey, ``"L"``) or 3 (``"RGB"``).
        mean, std: per-channel normalization.
        bundle: the bundle folder the weights came from; None for a random initialization.
        zero_scales_reset: batch-norm layers of a random initialization whose zero scale was set
            to 1 (:func:`reset_zero_init_scales`); 0 for a bundle.
    """

    backbone: Backbone
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bundle: Path | None
    zero_scales_reset: int = 0

    @property
    def mode(self) -> str:
        return "RGB" if self.in_chans == 3 else "L"


def load_probe_model(model: str | Path, img_size: int | None = None, channels: int | None = None, seed: int = 0) -> ProbeModel:
    """A bundle folder (its recorded backbone and preprocessing) or a randomly initialized backbone.

    A random initialization is drawn from ``mix_seed(seed)`` inside a forked RNG, so the baseline
    depends on the seed alone and the caller's global random state is left untouched; its zero
    batch-norm scales are then set to 1 (:func:`reset_zero_init_scales`).

    Raises:
        BundleError: a bundle that is unreadable or records no backbone.
        ConfigError: an unknown backbone name, or ``img_size``/``channels`` contradicting the bundle.
    """
    path = Path(model)
    bundle = path if path.exists() else None
    name = str(model)
    if bundle is not None:
        config = load_bundle(bundle).config
        if "backbone" not in config:
            raise BundleError(f"{path}: this '{config['task']}' bundle records no backbone to probe")
        in_chans = int(config.get("in_chans", DEFAULT_CHANNELS))
        size = int(config.get("img_size") or img_size or DEFAULT_IMG_SIZE)
        for name, given, recorded in (("channels", channels, in_chans), ("img_size", img_size, size)):
            if given is not None and given != recorded:
                raise ConfigError(f"{path}: the bundle was made for {name}={recorded}, got {name}={given}")
        mean, std = default_mean_std(in_chans)
        mean, std = tuple(config.get("mean", mean)), tuple(config.get("std", std))
        name = str(config["backbone"])
    else:
        if name not in timm.list_models() and (path.suffix or len(path.parts) > 1):
            raise BundleError(f"{model}: bundle folder not found (and not a backbone name)")
        in_chans = DEFAULT_CHANNELS if channels is None else channels
        size = DEFAULT_IMG_SIZE if img_size is None else img_size
        mean, std = default_mean_std(in_chans)
    if in_chans not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {in_chans}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(seed))
        backbone = create_backbone(name, in_chans=in_chans, pretrained=bundle, img_size=size)
    reset = reset_zero_init_scales(backbone) if bundle is None else 0
    return ProbeModel(backbone.eval(), size, in_chans, mean, std, bundle, reset)


def _check_args(val_fraction: float, shots: int | None, draws: int) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1) (the test part), got {val_fraction}")
    if shots is not None and shots < 1:
        raise ConfigError(f"shots must be >= 1, got {shots}")
    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")


def _labelled_split(
    data: str | ClassificationData, val_fraction: float, seed: int
) -> tuple[ClassificationData, np.ndarray, np.ndarray, np.ndarray]:
    """Labelled samples only, their labels and the (train, test) index split of them."""
    if not isinstance(data, ClassificationData):
        data = resolve_classification_data(data)
    labelled = data.subset([i for i, s in enumerate(data.samples) if s.label >= 0])
    if not len(labelled):
        raise DataError(f"{data.source}: no labelled images; probing needs class labels")
    labels = labelled.labels()
    present = np.unique(labels)
    if len(present) < 2:
        raise DataError(f"{data.source}: probing needs at least 2 classes, found {len(present)}")
    train, test = split_indices(labels, val_fraction, seed=seed)
    if len(np.unique(labels[train])) < 2:
        raise DataError(f"{data.source}: the training part of the split holds fewer than 2 classes")
    return labelled, labels, train, test


def probe(
    model: str,
    data: str | ClassificationData,
    *,
    shots: int | None = None,
    draws: int = 5,
    val_fraction: float = 0.3,
    seed: int = 0,
    img_size: int | None = None,
    channels: int | None = None,
    knn_k: int = 20,
    batch_size: int = 256,
    progress: bool = False,
    recalibrate_bn: bool = True,
    device: str = "cpu",
) -> dict:
    """Evaluate a frozen backbone's features with kNN, linear and k-shot linear probes.

    A random initialization is timm's, except that batch-norm scales timm sets to zero (the last one
    of each residual block) are set to 1 (:func:`reset_zero_init_scales`): with them at zero a random
    ResNet ignores all but one corner of the image and is no baseline at all. Batch-norm statistics are re-estimated on the probe's training images before extraction, for
    pretrained and random models alike (:func:`recalibrate_batchnorm`): without it a random ResNet's
    eval-mode features collapse and the "random baseline" says nothing. Only training images are
    used, so no test statistic leaks into the features. Features are extracted once and every probe
    reuses them.

    Args:
        model: an omnivis bundle folder of any task that records a ``backbone`` (its ``in_chans``,
            ``img_size``, ``mean`` and ``std`` are used), or a backbone name for a random
            initialization (drawn from ``seed``; defaults 32 px, 3 channels, ``default_mean_std``).
        data: a data spec (``builtin:digits``, a folder ...) or loaded data; unlabeled samples are
            left out.
        shots: labelled training images per class for the k-shot probe (None: no k-shot probe).
        draws: random draws of the k-shot training set, each ``np.random.default_rng([seed, draw])``.
        val_fraction: test fraction of the stratified ``split_indices`` split.
        seed: split seed, k-shot draws and the random initialization.
        img_size, channels: input size and channels for a backbone name; with a bundle they must be
            None or equal to what it records.
        knn_k: neighbours of the weighted kNN vote (:func:`knn_accuracy`).
        batch_size: images per forward pass.
        progress: show progress bars.
        recalibrate_bn: re-estimate batch-norm statistics (turn off only to measure its effect).
        device: torch device for the forward passes.

    Returns:
        ``knn_accuracy`` (DINO-weighted cosine vote), ``linear_accuracy`` (logistic regression on
        standardized features of all training images), with ``shots`` also ``kshot_accuracy_mean``,
        ``kshot_accuracy_std`` (population std over draws) and ``kshot_accuracies``; and
        ``model``, ``data``, ``pretrained``, ``img_size``, ``channels``, ``bn_recalibrated``
        (False when not asked for or the model has no batch-norm), ``zero_init_scales_reset``
        (batch-norm layers of a random initialization given scale 1), ``num_train``, ``num_test``,
        ``num_classes``, ``feature_dim``, ``knn_k``, ``knn_vote``, ``shots``, ``draws`` (None
        without ``shots``), ``val_fraction``, ``seed`` and ``seconds``.

    Raises:
        DataError: unlabeled data, fewer than 2 classes, or ``shots`` above a class's training count.
        ConfigError / BundleError: bad arguments, an unknown backbone or an unusable bundle.
    """
    started = time.perf_counter()
    _check_args(val_fraction, shots, draws)
    if knn_k < 1 or batch_size < 1:
        raise ConfigError(f"knn_k and batch_size must be >= 1, got {knn_k} and {batch_size}")
    labelled, labels, train, test = _labelled_split(data, val_fraction, seed)
    if shots is not None:  # fail before the expensive part
        check_shots(labels[train], shots, labelled.classes)
    probed = load_probe_model(model, img_size=img_size, channels=channels, seed=seed)
    backbone = probed.backbone.to(device)
    transform = build_eval_transform(probed.img_size, probed.mean, probed.std)
    sources = [s.source for s in labelled.samples]
    train_sources, test_sources = [sources[i] for i in train], [sources[i] for i in test]

    def batches(items: list, description: str, min_batch: int = 1) -> Iterator[torch.Tensor]:
        return image_batches(items, probed.mode, transform, batch_size, description, progress, min_batch)

    recalibrated = recalibrate_bn and recalibrate_batchnorm(
        backbone, batches(train_sources, "recalibrating batch-norm", min_batch=2), device
    )
    train_x = extract_features(backbone, batches(train_sources, "features (train)"), device)
    test_x = extract_features(backbone, batches(test_sources, "features (test)"), device)
    result = evaluate_features(
        train_x, labels[train], test_x, labels[test], classes=labelled.classes, shots=shots, draws=draws,
        seed=seed, knn_k=knn_k,
    )
    return {
        **result,
        "model": str(model),
        "data": labelled.source,
        "pretrained": probed.bundle is not None,
        "img_size": probed.img_size,
        "channels": probed.in_chans,
        "bn_recalibrated": bool(recalibrated),
        "zero_init_scales_reset": probed.zero_scales_reset,
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": len(np.unique(labels)),
        "feature_dim": int(train_x.shape[1]),
        "knn_k": knn_k,
        "knn_vote": f"weighted exp(cos/{KNN_TEMPERATURE}) (DINO)",
        "shots": shots,
        "draws": draws if shots is not None else None,
        "val_fraction": val_fraction,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }


def raw_pixels(sources: Sequence, where: str = "data") -> np.ndarray:
    """Flattened pixels scaled to 0..1, (N, H * W * C); grey images keep a single channel.

    Images are read through the one ``load_images`` as RGB; when every image has equal channels
    (grey data such as digits) one channel is kept, so each pixel is one feature, as in the 8 x 8
    digits arrays themselves.
    """
    images = [np.asarray(im) for im in load_images(sources, "RGB")]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{where}: raw-pixel features need images of one size, found {sorted(shapes)[:3]}")
    stack = np.stack(images)
    if np.array_equal(stack[..., 0], stack[..., 1]) and np.array_equal(stack[..., 0], stack[..., 2]):
        stack = stack[..., :1]
    return stack.reshape(len(stack), -1).astype(np.float32) / 255.0


def raw_pixel_baseline(
    data: str | ClassificationData,
    val_fraction: float = 0.3,
    seed: int = 0,
    shots: int | None = None,
    draws: int = 5,
    knn_k: int = 20,
) -> dict:
    """The linear and k-shot protocol of :func:`probe` (and its kNN) on raw flattened pixels.

    The reference any learned representation must beat: the same split, the same logistic
    regression on standardized features and the same k-shot draws, with pixels (0..1) as features.

    Returns:
        ``knn_accuracy``, ``linear_accuracy``, the ``kshot_*`` keys with ``shots``, and ``model``
        (``"raw_pixels"``), ``data``, ``num_train``, ``num_test``, ``num_classes``, ``feature_dim``,
        ``shots``, ``draws``, ``val_fraction``, ``seed`` and ``seconds``.

    Raises:
        DataError: as :func:`probe`, or images of different sizes.
    """
    started = time.perf_counter()
    _check_args(val_fraction, shots, draws)
    labelled, labels, train, test = _labelled_split(data, val_fraction, seed)
    pixels = raw_pixels([s.source for s in labelled.samples], labelled.source)
    result = evaluate_features(
        pixels[train], labels[train], pixels[test], labels[test], classes=labelled.classes, shots=shots,
        draws=draws, seed=seed, knn_k=knn_k,
    )
    return {
        **result,
        "model": "raw_pixels",
        "data": labelled.source,
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": len(np.unique(labels)),
        "feature_dim": int(pixels.shape[1]),
        "shots": shots,
        "draws": draws if shots is not None else None,
        "val_fraction": val_fraction,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
