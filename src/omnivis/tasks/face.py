"""Face recognition: an embedding model trained with ArcFace, CosFace or plain softmax on identity
folders, judged on people it never saw.

The people are split, not the images (``data/faces.py``): training sees some identities, the bundle
is evaluated on the others (verification ROC, EER, TAR at FAR; identification), and the threshold
for a false-accept rate of 1e-2 on those held-out pairs is stored in the bundle, so that
``omnivis face verify`` and ``identify`` decide with a threshold that was chosen, not guessed.
The angular-margin losses are pytorch-metric-learning's; their class centres live in the training
module only (the bundle keeps the embedding model).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from omnivis.bundle import model_card
from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.faces import identity_split, parse_identities
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.data.transforms import AugmentConfig
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.face import CROP_POLICY, TASK, evaluate_face
from omnivis.models.backbones import create_backbone
from omnivis.models.embedding import EmbeddingModel
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.labelled_images import labelled_image_datamodule, resolve_from_data
from omnivis.tasks.run import TrainingPlan, run_training

LOSSES = ("arcface", "cosface", "softmax")
MAX_FACE_SIZE = 64  # on ORL, 64 px beat 96 px on every figure at half the time (EER 0.124 vs 0.149)


def _face_augment() -> AugmentConfig:
    """Mirror, small shifts, tilts and lighting changes keep a person's identity."""
    return AugmentConfig(hflip=True, scale_min=0.75, rotation=10.0, color_jitter=0.3)


@dataclass(kw_only=True)
class FaceConfig:
    """Everything that defines a face-embedding run.

    Attributes:
        data: an identity folder (one sub-folder per person) or ``builtin:orl-faces``.
        strict: unreadable images are an error instead of being skipped with a warning.
        test_identities: people held out of training, e.g. ``s31-s40`` (None: ORL's documented
            s31-s40 for builtin:orl-faces, else a seeded ``test_fraction`` of the people).
        test_fraction: share of people held out when ``test_identities`` is None.
        model: any timm name or omnivis preset (``omnivis models list``).
        img_size: square input size (None: read off the data as for classification, at most 64).
        channels: 1 or 3 (None: 1 when the sampled photos are grey).
        init_from: a bundle or safetensors file to initialize the backbone from.
        embedding_size: length of the embedding vector.
        loss: ``arcface`` (additive angular margin), ``cosface`` (additive cosine margin) or
            ``softmax`` (a plain classifier on the embedding: the baseline).
        margin: the loss's margin (None: ArcFace 28.6 degrees = 0.5 rad, CosFace 0.35).
        scale: the angular losses' logit scale (30 suits tens to thousands of people; 64 is the
            paper's for 85,000).
        flip_test: embed each face with its mirror image too and sum the two (insightface's
            "flip test"): steadier embeddings for twice the compute.
        crop_margin: the crop policy for detected faces: a square around the face box, this much
            of the box's side added on every side (undetected photos are used whole, centre square).
        batch_size: images per step (capped at the training-set size).
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay (none on norm and bias parameters).
        warmup_epochs: length of the learning-rate warmup, in epochs.
        dropout: dropout inside the embedding head.
        augment: training augmentation (default: flips, crops, tilts, lighting).
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    data: str = "builtin:orl-faces"
    strict: bool = False
    test_identities: str | None = None
    test_fraction: float = 0.25
    model: str = "omnivis_resnet_tiny"
    img_size: int | None = None
    channels: int | None = None
    init_from: str | None = None
    embedding_size: int = 128
    loss: str = "arcface"
    margin: float | None = None
    scale: float = 30.0
    crop_margin: float = 0.2
    flip_test: bool = True
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    dropout: float = 0.0
    augment: AugmentConfig = field(default_factory=_face_augment)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.img_size is not None and self.img_size < 8:
            raise ConfigError(f"img_size must be >= 8, got {self.img_size}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.embedding_size < 2 or self.batch_size < 2 or self.lr <= 0 or self.scale <= 0:
            raise ConfigError("embedding_size and batch_size must be >= 2, lr and scale > 0")
        if self.crop_margin < 0:
            raise ConfigError(f"crop_margin must be >= 0, got {self.crop_margin}")

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


def build_loss(config: FaceConfig, people: int) -> nn.Module:
    """The training objective over ``people`` identities: embeddings (B, D), labels (B,) -> loss."""
    from pytorch_metric_learning import losses

    if config.loss == "arcface":
        margin = 28.6 if config.margin is None else config.margin
        return losses.ArcFaceLoss(people, config.embedding_size, margin=margin, scale=config.scale)
    if config.loss == "cosface":
        margin = 0.35 if config.margin is None else config.margin
        return losses.CosFaceLoss(people, config.embedding_size, margin=margin, scale=config.scale)
    return _SoftmaxLoss(config.embedding_size, people)


class _SoftmaxLoss(nn.Module):
    """The baseline: a linear classifier on the embedding, cross-entropy; no margin, no normalization."""

    def __init__(self, embedding_size: int, people: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_size, people)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(embeddings), labels)


class FaceModule(pl.LightningModule):
    """Trains ``model`` (the embedding network) through ``loss`` (which owns the class centres)."""

    def __init__(self, config: FaceConfig, people: int) -> None:
        super().__init__()
        self.config = config
        backbone = create_backbone(config.model, in_chans=config.channels, pretrained=config.init_from,
                                   img_size=config.img_size)
        self.model = EmbeddingModel(backbone, config.embedding_size, dropout=config.dropout)
        self.loss = build_loss(config, people)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.loss(self.model(images).float(), labels)  # a NaN stops the run in the engine
        log_training(self, {"train/loss": loss})
        return loss

    def configure_optimizers(self) -> dict:
        # the loss's class centres train with the model
        return warmup_cosine_for(self, self, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


def bundle_config(config: FaceConfig, people: list[str], held_out: list[str], train_size: int,
                  mean, std) -> dict:
    return {
        "task": TASK,
        "backbone": config.model,
        "img_size": config.img_size,
        "in_chans": config.channels,
        "mean": list(mean),
        "std": list(std),
        "data": config.data,
        "split": {"test_identities": held_out, "seed": config.trainer.seed, "train_size": train_size,
                  "train_people": len(people)},
        "init_from": config.init_from,
        "embedding_size": config.embedding_size,
        "loss": {"name": config.loss, "margin": config.margin, "scale": config.scale},
        "normalization": {"image_mean": list(mean), "image_std": list(std), "embedding": "l2"},
        "crop": {**CROP_POLICY, "margin": config.crop_margin, "size": config.img_size},
        "flip_test": config.flip_test,
        "train_config": config_to_dict(config),
    }


def face_plan(config: FaceConfig) -> TrainingPlan:
    """Hold out whole people, train on the rest, evaluate and calibrate on the held-out people."""
    data = resolve_classification_data(config.data, strict=config.strict)
    if len(data.classes) < 2:
        raise DataError(f"{config.data}: face training needs at least 2 people, found {len(data.classes)}")
    train_idx, test_idx, held_out = identity_split(data, parse_identities(config.test_identities),
                                                   config.test_fraction, config.trainer.seed)
    train = data.subset(train_idx)
    size_given = config.img_size is not None
    config, (mean, std), choices = resolve_from_data(config, train)
    if not size_given and config.img_size > MAX_FACE_SIZE:
        choices = [line for line in choices if not line.startswith("img_size")]
        choices.append(f"img_size {MAX_FACE_SIZE}: the photos are {config.img_size} px or more, and faces are "
                       f"trained at most at {MAX_FACE_SIZE} px (--img-size to choose)")
        config = replace(config, img_size=MAX_FACE_SIZE)
    people = sorted(set(train.labels().tolist()))
    relabel = {old: new for new, old in enumerate(people)}  # dense labels over the training people
    train = ClassificationData([ImageSample(s.source, relabel[s.label], s.name) for s in train.samples],
                               [data.classes[p] for p in people], data.source, data.skipped)
    datamodule, lines = labelled_image_datamodule(config, train, None, mean, std, names=("training faces", ""))
    choices += lines
    choices.append(f"held out {len(held_out)} people ({len(test_idx)} photos) for evaluation and the threshold"
                   if len(test_idx) else "no people held out: no evaluation and no threshold; run omnivis face "
                   "calibrate BUNDLE --data OTHER_PEOPLE before verify or identify")
    held = data.subset(test_idx) if len(test_idx) else None
    return TrainingPlan(
        command="omnivis train face",
        datamodule=datamodule,
        build_module=lambda: FaceModule(config, len(people)),
        header=bundle_config(config, train.classes, held_out, len(train_idx), mean, std),
        evaluate=(lambda bundle, progress: evaluate_face(bundle, data=held, out_dir=bundle, progress=progress,
                                                         calibrate=True)) if held is not None else None,
        summary_keys=SUMMARY_KEYS,
        skipped=data.skipped,
        card=lambda header, metrics: model_card(header, metrics, usage=FACE_USAGE),
        config=config,
        choices=choices,
    )


def train_face(config: FaceConfig, out: str | Path, resume: bool = False,
               callbacks: list[pl.Callback] | None = None) -> Path:
    """Train an embedding model, evaluate it on the held-out people and store its threshold; returns ``out``."""
    return run_training(face_plan, config, out, resume, callbacks)


FACE_USAGE = (
    "omnivis face verify THIS_FOLDER a.png b.png",
    "omnivis face enroll THIS_FOLDER --gallery PEOPLE_FOLDER --out INDEX",
    "omnivis face identify THIS_FOLDER INDEX photos/",
    "omnivis face calibrate THIS_FOLDER --data HELD_OUT_PEOPLE --far 0.001",
    "omnivis eval THIS_FOLDER --data PEOPLE_FOLDER_OR_pairs.txt",
)
SUMMARY_KEYS = ("auc", "eer", "tar_at_far_0.1", "tar_at_far_0.01", "tar_at_far_0.001", "accuracy_10fold",
                "accuracy_10fold_std", "top1_accuracy", "top5_accuracy", "open_set_f1", "threshold")
