"""The multi-task run's configuration: :class:`MultitaskConfig` and :func:`parse_tasks`.

Kept apart from :mod:`omnivis.tasks.multitask` (the LightningModule and training) so the CLI and the
docs generator can read the config without importing the training code or Lightning (``TrainerConfig``
comes from ``engine/config.py``); the task, weighting and decoder names still come from models/, so torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from omnivis.data.builtin import is_builtin_shapes
from omnivis.data.masks import MaskAugment
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError
from omnivis.models.multitask import DEFAULT_TASKS, TASK_NAMES, WEIGHTINGS
from omnivis.models.segmentation import ARCHS, SIZE_MULTIPLE


def parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """``"classify,segment"`` or a sequence -> the tasks in canonical order (classify, segment, detect).

    Raises:
        ConfigError: an unknown task (naming the close match) or no task at all.
    """
    names = [t.strip().lower() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    for name in names:
        if name not in TASK_NAMES:
            close = difflib.get_close_matches(name, TASK_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(TASK_NAMES)}"
            raise ConfigError(f"unknown task '{name}'{hint}")
    if not names:
        raise ConfigError(f"tasks must name at least one of {', '.join(TASK_NAMES)}")
    return tuple(t for t in TASK_NAMES if t in names)


@dataclass(kw_only=True)
class MultitaskConfig:
    """Everything that defines a multi-task run.

    Attributes:
        data: ``builtin:shapes`` (the one dataset with every label kind built in) or a COCO JSON file.
        images: the COCO images folder (default: the JSON's folder).
        labels: a ``path,label`` CSV of image-level classes for a COCO file (paths relative to
            ``images`` or absolute); required when ``tasks`` has classify.
        val_fraction: held-out fraction of a COCO file (seeded by ``trainer.seed``).
        strict: a bad COCO record, image file or CSV row is an error instead of being skipped.
        tasks: the heads, any non-empty subset of classify, segment, detect (a comma-separated
            string is accepted); stored in canonical order.
        train_images: ``builtin:shapes`` only: how many scenes to train on.
        val_images: ``builtin:shapes`` only: how many scenes to validate on.
        train_seed: ``builtin:shapes`` only: the seed that draws the training scenes.
        val_seed: ``builtin:shapes`` only: the seed that draws the validation scenes.
        seg_label_fraction: fraction of training images that keep their mask (seeded by
            ``trainer.seed``); the others train only the other heads.
        cls_label_fraction: fraction of training images that keep their class label (seeded likewise).
        det_label_fraction: fraction of training images that keep their boxes (seeded likewise).
        weighting: ``fixed`` (``cls_weight``, ``seg_weight``, ``det_weight``) or ``uncertainty`` (learned).
        cls_weight: classification loss weight (``fixed`` weighting).
        seg_weight: segmentation loss weight (``fixed`` weighting).
        det_weight: detection loss weight (``fixed`` weighting).
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size; a multiple of 32 (the deepest backbone stride).
        channels: 3 (RGB) or 1 (grayscale).
        arch: segmentation decoder: ``fpn``, ``unet`` or ``deeplabv3plus``.
        decoder_width: segmentation decoder size (channels of its middle blocks).
        init_from: a bundle or safetensors file to initialize the backbone from.
        fpn_channels: width of the detection FPN and FCOS head (a multiple of 32, >= 64, as detect).
        score_threshold: lowest box score ``predict`` reports (evaluation keeps everything >= 0.05).
        batch_size: images per step on each device.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the linear learning-rate warmup, in epochs.
        dice_weight: weight of the Dice loss added to the segmentation cross-entropy.
        label_smoothing: label smoothing of the classification cross-entropy.
        augment: joint image/mask/box augmentation.
        trainer: engine settings; 12 epochs.
    """

    data: str = "builtin:shapes"
    images: str | None = None
    labels: str | None = None
    val_fraction: float = 0.2
    strict: bool = False
    tasks: tuple[str, ...] = DEFAULT_TASKS
    train_images: int = 600
    val_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    seg_label_fraction: float = 1.0
    cls_label_fraction: float = 1.0
    det_label_fraction: float = 1.0
    weighting: str = "uncertainty"
    cls_weight: float = 1.0
    seg_weight: float = 1.0
    det_weight: float = 1.0
    model: str = "omnivis_resnet_tiny"
    img_size: int = 64
    channels: int = 3
    arch: str = "fpn"
    decoder_width: int = 64
    fpn_channels: int = 64
    score_threshold: float = 0.5
    init_from: str | None = None
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    dice_weight: float = 1.0
    label_smoothing: float = 0.0
    augment: MaskAugment = field(default_factory=lambda: MaskAugment(hflip=True, scale_min=0.7, color_jitter=0.2))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=12))

    def __post_init__(self) -> None:
        self.tasks = parse_tasks(self.tasks)
        if is_builtin_shapes(self.data):
            if self.images is not None or self.labels is not None:
                raise ConfigError("images and labels apply to a COCO --data file, not builtin:shapes")
        elif not self.data.lower().endswith(".json"):
            raise ConfigError(f"multitask data must be builtin:shapes or a COCO JSON file (--data ann.json "
                              f"--images DIR), got '{self.data}'")
        elif "classify" in self.tasks and self.labels is None:
            raise ConfigError("tasks has classify but a COCO file has no image-level classes: pass --labels CSV "
                              "(path,label) or drop classify from --tasks")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting '{self.weighting}'; choose one of {', '.join(WEIGHTINGS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.img_size < SIZE_MULTIPLE or self.img_size % SIZE_MULTIPLE:
            raise ConfigError(f"img_size must be a multiple of {SIZE_MULTIPLE}, got {self.img_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if "detect" in self.tasks and self.channels != 3:
            raise ConfigError(f"the detect head takes RGB images: channels must be 3, got {self.channels}")
        fractions = {"classify": "cls_label_fraction", "segment": "seg_label_fraction", "detect": "det_label_fraction"}
        for name in fractions.values():
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        used = [fractions[t] for t in self.tasks]
        if all(getattr(self, name) == 0 for name in used):
            raise ConfigError(f"{' and '.join(used)} cannot all be 0: nothing to learn")
        if min(self.cls_weight, self.seg_weight, self.det_weight) < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("cls_weight, seg_weight and det_weight must be >= 0, batch_size >= 1 and lr > 0")
        if self.train_images < 1 or self.val_images < 0:
            raise ConfigError("train_images must be >= 1 and val_images >= 0")
        if self.fpn_channels < 64 or self.fpn_channels % 32:
            raise ConfigError(f"fpn_channels must be a multiple of 32 and >= 64 (FCOS's head uses 32-group GroupNorm), got {self.fpn_channels}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"
