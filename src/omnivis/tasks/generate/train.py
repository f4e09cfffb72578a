"""``train_generator``: any method, trained on the shared engine, saved as a ``generate`` bundle."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.cache import cache_datasets
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.readers import ClassificationData
from omnivis.data.splits import split_indices
from omnivis.data.transforms import generator_transform
from omnivis.errors import DataError
from omnivis.tasks.generate.config import TASK, GenerateConfig
from omnivis.tasks.generate.methods import METHOD_SPECS
from omnivis.tasks.generate.modules import TRAINING_MODULES
from omnivis.tasks.run import TrainingPlan, run_training


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


def generate_plan(config: GenerateConfig) -> TrainingPlan:
    """The generator run: the method's net sized from the config and data, no validation during training;
    with ``config.reference``, FID/KID and class accuracy of the written bundle."""
    data = _load(config)
    spec = METHOD_SPECS[config.method]
    module = TRAINING_MODULES[config.method]
    net = spec.net_config(config, len(data.classes))  # checks the method's own constraints before any file is written
    seed = config.trainer.seed
    train_idx, val_idx = split_indices(data.labels(), config.val_fraction, seed=seed)
    dataset = ImageClassificationDataset(data.subset(train_idx), generator_transform(config.img_size, config.hflip),
                                         config.mode, seed)
    cached = cache_datasets({"training images": dataset}, config.trainer.cache_mb, config.trainer.progress)
    datamodule = SeededDataModule(dataset, None, batch_size=min(config.batch_size, len(train_idx)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    header = {
        "task": TASK, "method": config.method, "img_size": config.img_size,
        "in_chans": config.channels, "mean": [0.5] * config.channels, "std": [0.5] * config.channels,
        "classes": list(data.classes), "conditional": config.conditional, "data": config.data,
        "split": {"val_fraction": config.val_fraction, "seed": seed, "train_size": len(train_idx)},
        "net": net, "sampling": {"sampler": config.sampler, "steps": config.sample_steps,
                                 "guidance": config.guidance if config.conditional else 1.0},
        "reference": config.reference, "train_config": config_to_dict(config),
    }
    scored = bool(config.reference and spec.sample is not None and len(val_idx))
    return TrainingPlan(
        command="omnivis train generate",
        datamodule=datamodule,
        build_module=lambda: module(config, net),
        header=header,
        weights=lambda module: module.export_model().state_dict(),
        evaluate=_evaluate if scored else None,
        # the method's module knows whether every parameter gets a gradient each step (a GAN's D loss reaches only D)
        partial_graph=module.partial_graph,
        skipped=data.skipped,
        choices=cached,
    )


def _evaluate(bundle: Path, progress: bool) -> dict:
    from omnivis.tasks.generate.evaluate import evaluate_generator

    return evaluate_generator(bundle, out_dir=bundle, progress=progress)


def train_generator(config: GenerateConfig, out: str | Path, resume: bool = False,
                    callbacks: list[pl.Callback] | None = None) -> Path:
    """Train ``config.method`` and write a bundle into ``out``; returns ``out``. With ``config.reference``
    set, ``out`` also holds the evaluation report (FID/KID, class accuracy)."""
    return run_training(generate_plan, config, out, resume, callbacks)
