"""What the tasks that train on labelled images share (classification, face embeddings): reading the
unset parts of the config off the training images, and the seeded datamodule over them.

A task that trains on (image, label) pairs gets its defaults and its data pipeline from here, so that
channels, size, flips, normalization, the decoded-image cache and the loader workers are decided the
same way, and printed the same way, whatever the labels mean (a class, a person).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from omnivis.data.cache import cache_datasets, workers_line
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.profile import flip_keeps_labels, profile_images, size_for
from omnivis.data.readers import ClassificationData
from omnivis.data.transforms import build_eval_transform, build_train_transform


def resolve_from_data(config, train: ClassificationData,
                      stats: tuple[Sequence[float], Sequence[float]] | None = None,
                      ) -> tuple[object, tuple[tuple[float, ...], tuple[float, ...]], list[str]]:
    """``config`` (any config with ``channels``, ``img_size``, ``augment`` and ``trainer``) with channels,
    size and flips read off the training images where it left them None;
    the mean/std to normalize with (``stats`` if given, e.g. a teacher's); one line per choice."""
    sources = [s.source for s in train.samples]
    profile = profile_images(sources, seed=config.trainer.seed)
    choices = []
    channels, img_size, hflip = config.channels, config.img_size, config.augment.hflip
    if channels is None:
        channels = profile.channels
        choices.append(profile.channels_line())
    if img_size is None:
        img_size = size_for(profile.native_size)
        choices.append(f"img_size {img_size}: the images' median shorter side is {profile.native_size} px "
                       "(--img-size to choose)")
    mode = "RGB" if channels == 3 else "L"
    if hflip is None:
        check = flip_keeps_labels(sources, train.labels(), mode, config.trainer.seed)
        hflip = check.hflip
        choices.append(f"horizontal flips {'on' if hflip else 'off'}: {check.reason} (--hflip / --no-hflip)")
    if stats is None:
        stats = profile.stats(channels)
        choices.append(profile.stats_line(channels))
    resolved = replace(config, channels=channels, img_size=img_size, augment=replace(config.augment, hflip=hflip))
    return resolved, (tuple(stats[0]), tuple(stats[1])), choices


def labelled_image_datamodule(config, train: ClassificationData, held_out: ClassificationData | None,
                              mean: Sequence[float], std: Sequence[float],
                              names: tuple[str, str] = ("training images", "held-out images"),
                              ) -> tuple[SeededDataModule, list[str]]:
    """The seeded datamodule: ``train`` augmented by ``config.augment``, ``held_out`` (if any) resized
    only, both decoded into memory once when they fit ``config.trainer.cache_mb``; with the lines that
    say what was cached and how many loader workers run."""
    seed = config.trainer.seed
    train_set = ImageClassificationDataset(train, build_train_transform(config.img_size, mean, std, config.augment),
                                           config.mode, seed)
    val_set = (ImageClassificationDataset(held_out, build_eval_transform(config.img_size, mean, std), config.mode, seed)
               if held_out else None)
    lines = cache_datasets({names[0]: train_set, names[1]: val_set}, config.trainer.cache_mb, config.trainer.progress)
    datamodule = SeededDataModule(train_set, val_set, batch_size=min(config.batch_size, len(train)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    lines.append(workers_line(datamodule.num_workers, config.trainer.num_workers))
    return datamodule, lines
