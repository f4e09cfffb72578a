"""``train_generator``: any method, trained on the shared engine, saved as a ``generate`` bundle."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import numpy as np

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.cache import cache_datasets
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.readers import ClassificationData
from omnivis.data.splits import split_indices
from omnivis.data.transforms import generator_transform
from omnivis.errors import DataError, OmnivisWarning
from omnivis.tasks.generate.config import TASK, GenerateConfig
from omnivis.tasks.generate.methods import METHOD_SPECS
from omnivis.tasks.generate.modules import TRAINING_MODULES, TextDiffusionModule
from omnivis.tasks.run import TrainingPlan, run_training

if TYPE_CHECKING:
    from omnivis.data.captions import CaptionData, CaptionedImage

EXAMPLE_PROMPTS = 8
"""Training captions a text bundle keeps (``example_prompts``) for its docs and the web page."""


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


def example_prompts(samples: Sequence[CaptionedImage], count: int = EXAMPLE_PROMPTS) -> list[str]:
    """Up to ``count`` distinct training captions spread over the data (for docs and the web page)."""
    firsts = list(dict.fromkeys(s.captions[0] for s in samples))
    if len(firsts) <= count:
        return firsts
    return [firsts[int(i)] for i in np.linspace(0, len(firsts) - 1, count).round()]


@dataclass
class _Data:
    """What the two kinds of run (class images, captions) hand the shared part of ``generate_plan``."""

    data: ClassificationData | CaptionData
    train_idx: np.ndarray
    val_idx: np.ndarray
    net: dict
    dataset: ImageClassificationDataset
    build_module: Callable[[], pl.LightningModule]
    header: dict = field(default_factory=dict)


def _image_data(config: GenerateConfig, spec, module) -> _Data:
    data = _load(config)
    net = spec.net_config(config, len(data.classes))  # checks the method's constraints before any file is written
    train_idx, val_idx = split_indices(data.labels(), config.val_fraction, seed=config.trainer.seed)
    dataset = ImageClassificationDataset(data.subset(train_idx), generator_transform(config.img_size, config.hflip),
                                         config.mode, config.trainer.seed)
    return _Data(data, train_idx, val_idx, net, dataset, lambda: module(config, net))


def _caption_data(config: GenerateConfig, spec) -> _Data:
    """Captioned images, the frozen encoder's embedding of every distinct training caption (one call),
    and the header fields of a text-conditioned bundle."""
    from omnivis.data.captions import as_indexed_images, caption_index, resolve_caption_data
    from omnivis.models.text import load_text_encoder

    seed = config.trainer.seed
    data = resolve_caption_data(config.data, strict=config.strict, seed=seed)
    if len(data) == 0:
        raise DataError(f"{config.data}: no captioned images")
    if config.hflip:
        warnings.warn("--hflip with captions: a flipped image no longer matches 'left'/'right' in its caption",
                      OmnivisWarning, stacklevel=3)
    encoder = load_text_encoder(config.text_encoder)
    net = spec.net_config(config, 0, text_dim=encoder.dim)
    train_idx, val_idx = split_indices(data.labels(), config.val_fraction, seed=seed)
    train = data.subset(train_idx)
    texts, ids, counts = caption_index(train.samples)
    table = encoder.encode(texts)  # every distinct training caption, embedded once
    header = {"text": True, "text_encoder": encoder.identity(), "example_prompts": example_prompts(train.samples),
              "captions": {"train_images": len(train), "distinct_captions": len(texts)}}
    dataset = ImageClassificationDataset(as_indexed_images(train), generator_transform(config.img_size, config.hflip), config.mode, seed)
    return _Data(data, train_idx, val_idx, net, dataset, lambda: TextDiffusionModule(config, net, table, ids, counts),
                 header)


def generate_plan(config: GenerateConfig) -> TrainingPlan:
    """The generator run: the method's net sized from the config and data, no validation during training;
    with ``config.reference``, FID/KID and class accuracy of the written bundle. With ``config.text``
    the data is read as captions and the net is conditioned on their frozen text embeddings."""
    spec = METHOD_SPECS[config.method]
    module = TRAINING_MODULES[config.method]
    seed = config.trainer.seed
    parts = _caption_data(config, spec) if config.text else _image_data(config, spec, module)
    data, train_idx, val_idx, net, dataset = parts.data, parts.train_idx, parts.val_idx, parts.net, parts.dataset
    cached = cache_datasets({"training images": dataset}, config.trainer.cache_mb, config.trainer.progress)
    datamodule = SeededDataModule(dataset, None, batch_size=min(config.batch_size, len(train_idx)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    header = {
        "task": TASK, "method": config.method, "img_size": config.img_size,
        "in_chans": config.channels, "mean": [0.5] * config.channels, "std": [0.5] * config.channels,
        "classes": [] if config.text else list(data.classes), "conditional": config.conditional, "data": config.data,
        "split": {"val_fraction": config.val_fraction, "seed": seed, "train_size": len(train_idx)},
        "net": net, "sampling": {"sampler": config.sampler, "steps": config.sample_steps,
                                 "guidance": config.default_guidance},
        "reference": config.reference, "train_config": config_to_dict(config), **parts.header,
    }
    scored = bool(config.reference and spec.sample is not None and len(val_idx))
    return TrainingPlan(
        command="omnivis train generate",
        datamodule=datamodule,
        build_module=parts.build_module,
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
