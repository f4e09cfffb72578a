"""``train_generator``: any method, trained on the shared engine, saved as a ``generate`` bundle."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.readers import ClassificationData, split_indices
from omnivis.engine.bundle import save_bundle
from omnivis.engine.trainer import build_trainer, fit, seed_everything
from omnivis.errors import DataError
from omnivis.metrics.classification import plot_training_curves
from omnivis.tasks.common import check_run_dir, keep_previous_logs, write_run_config
from omnivis.tasks.generate.config import GenerateConfig
from omnivis.tasks.generate.methods import METHOD_SPECS

TASK = "generate"


def generator_transform(img_size: int, hflip: bool = False):
    """PIL image -> (C, img_size, img_size) float in [-1, 1] (resize short side, center crop)."""
    steps = [v2.ToImage(), v2.Resize(img_size, interpolation=InterpolationMode.BILINEAR, antialias=True),
             v2.CenterCrop(img_size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])])


def split_data(data: ClassificationData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = data.labels()
    return split_indices(labels, val_fraction, seed=seed, stratify=bool((labels >= 0).all()))


def _load(config: GenerateConfig) -> ClassificationData:
    data = resolve_classification_data(config.data, strict=config.strict)
    if len(data) == 0:
        raise DataError(f"{config.data}: no images")
    if config.conditional:
        if len(data.classes) < 2:
            raise DataError(f"{config.data}: --conditional needs at least 2 classes, found {len(data.classes)}")
        unlabelled = [s.name for s in data.samples if s.label < 0]
        if unlabelled:
            raise DataError(f"{config.data}: --conditional needs labels, but '{unlabelled[0]}' has none")
    return data


def train_generator(config: GenerateConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train ``config.method`` and write a bundle into ``out``; returns ``out``.

    ``out`` also keeps ``checkpoints/`` (``last.ckpt`` for ``resume``), ``logs/``, ``run_config.json``,
    ``training_curves.png`` and, when ``config.reference`` is set, the evaluation report.
    """
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    data = _load(config)
    spec = METHOD_SPECS[config.method]
    num_classes = len(data.classes)
    net = spec.net_config(config, num_classes)  # checks the method's own constraints before any file is written
    if resume:
        keep_previous_logs(out)
    else:
        write_run_config(out, config)
    seed = config.trainer.seed
    train_idx, val_idx = split_data(data, config.val_fraction, seed)
    dataset = ImageClassificationDataset(data.subset(train_idx), generator_transform(config.img_size, config.hflip),
                                         config.mode, seed)
    datamodule = SeededDataModule(dataset, None, batch_size=min(config.batch_size, len(train_idx)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    seed_everything(seed)
    module = spec.module(config, net)
    trainer = build_trainer(config.trainer, out, monitor=None, extra_callbacks=callbacks, partial_graph=module.partial_graph)
    start = time.perf_counter()
    fit(trainer, module, datamodule, ckpt, f"omnivis train generate --out {out} --resume")
    train_time = time.perf_counter() - start
    if not trainer.is_global_zero:
        return out
    bconfig = {
        "task": TASK, "method": config.method, "backbone": config.method, "img_size": config.img_size,
        "in_chans": config.channels, "mean": [0.5] * config.channels, "std": [0.5] * config.channels,
        "classes": list(data.classes), "conditional": config.conditional, "data": config.data,
        "split": {"val_fraction": config.val_fraction, "seed": seed, "train_size": len(train_idx)},
        "net": net, "sampling": {"sampler": config.sampler, "steps": config.sample_steps,
                                 "guidance": config.guidance if config.conditional else 1.0},
        "reference": config.reference, "train_config": config_to_dict(config),
    }
    state = module.export_model().state_dict()
    metrics: dict = {"train_time_s": round(train_time, 2), "train_steps": int(trainer.global_step)}
    save_bundle(out, state, bconfig, metrics=metrics)
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    if config.reference and spec.sample is not None and len(val_idx):
        from omnivis.tasks.generate.evaluate import evaluate_generator

        scores = evaluate_generator(out, out_dir=out, progress=config.trainer.progress)
        metrics.update({k: v for k, v in scores.items() if isinstance(v, (int, float))})
        save_bundle(out, state, bconfig, metrics=metrics)
    return out
