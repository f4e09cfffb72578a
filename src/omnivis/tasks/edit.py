"""Image editing: networks that super-resolve, denoise, inpaint, enhance or restyle real photos.

Training needs clean photos only: each op's degradation (``data/degrade.py``) is synthesized on
random crops, seeded by sample index, and the network learns to undo it. After training, the bundle
is scored on whole test photos (scikit-image's, never trained on) against the op's classical
baseline, by the same function ``benchmarks/edit.py`` uses; ``omnivis edit`` applies it to images
of any size, tile by tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from omnivis.bundle import model_card
from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.cache import cache_datasets, workers_line
from omnivis.data.datamodule import SeededDataModule
from omnivis.data.degrade import MASKS, NOISES, OPS, Degradation
from omnivis.data.edit_crops import EditCropDataset
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError, DataError
from omnivis.inference.edit import TASK, evaluate_edit
from omnivis.models.restoration import build_restoration_net, run_restoration
from omnivis.tasks.common import log_training, warmup_cosine_for
from omnivis.tasks.run import TrainingPlan, run_training

DEFAULT_ARCH = {"superres": "residual", "denoise": "residual", "enhance": "residual", "inpaint": "inpaint",
                "style": "adain"}
OP_ARCHS = {"superres": ("residual", "subpixel"), "denoise": ("residual",), "enhance": ("residual",),
            "inpaint": ("inpaint",), "style": ("adain",)}
DEFAULT_CROP = {"superres": 96, "denoise": 48, "enhance": 64, "inpaint": 64, "style": 64}
DEFAULT_TILE = {"superres": 192, "denoise": 256, "enhance": 256, "inpaint": 384, "style": 512}
DEFAULT_WIDTH = {"inpaint": 16}  # it corrects a classical fill: a quarter of the compute of width 32, 6 blocks
DEFAULT_BLOCKS = {"inpaint": 4}
"""Tile sides in input pixels for ``omnivis edit``: large enough that context is a small overhead,
small enough that one tile's activations stay in tens of MB."""
STYLE_LEVEL = 2  # the backbone's third level: stride 8 on omnivis' ResNets (AdaIN's relu4_1 is stride 8)
EDIT_STEPS = (400, 1500)
"""Fewer than the classifiers' 3,000: a restoration step sees every pixel of 16 crops, and on a
2-core CPU these defaults finish in 2-6 minutes."""


@dataclass(kw_only=True)
class EditConfig:
    """Everything that defines an image-editing run.

    Attributes:
        op: ``superres``, ``denoise``, ``inpaint``, ``enhance`` or ``style``.
        data: clean training photos: a folder (searched recursively) or ``builtin:photos-train``.
        style_data: style: the style images to train on (None: the training photos themselves, each
            content crop styled after another photo).
        test_data: photos the bundle is scored on after training (None: no evaluation).
        strict: unreadable images are an error instead of being skipped with a warning.
        scale: super-resolution factor, 2 or 4 (superres only).
        noise: denoising noise: ``gaussian`` (of ``sigma``), ``realistic`` (shot + read noise, then
            JPEG) or ``blind`` (Gaussian, sigma drawn from ``sigma_min..sigma_max`` per crop).
        sigma: Gaussian noise level on the 0..255 scale (the blind model is scored at it).
        sigma_min: lowest blind noise level.
        sigma_max: highest blind noise level.
        masks: inpainting holes to train on: ``mixed``, ``free-form`` (brush strokes) or ``box``.
        arch: ``residual`` (EDSR-style), ``subpixel`` (ESPCN, super-resolution only, fastest),
            ``inpaint`` (encoder-decoder; the only one for inpaint) or ``adain`` (the only one for
            style); None: the op's default.
        model: style: the encoder, any timm name or omnivis preset (frozen; AdaIN at its third
            feature level, stride 8 on omnivis' ResNets; the micro ResNet is 6x cheaper a step
            than the tiny one).
        init_from: style: a bundle or safetensors file for the encoder (e.g. an omnivis pretrain
            bundle); None: the seeded random backbone.
        style_weight: style: weight of the style loss against the content loss.
        width: channels of the network (None: 32, inpaint 16; the inpaint network widens to 4x at
            1/4 resolution).
        blocks: residual blocks (None: 6, inpaint 4; the inpaint network's are dilated 2, 4, 8, 16).
        crop_size: side of the clean training crops in pixels (None: superres 96, denoise 48, the
            others 64; inpainting learns holes up to ~40% of a crop).
        crops_per_image: crops taken from each photo per epoch.
        batch_size: crops per step.
        lr: peak AdamW learning rate: linear warmup, then cosine decay, stepped per batch.
        weight_decay: AdamW weight decay.
        warmup_epochs: length of the learning-rate warmup, in epochs.
        tile: the tile side ``omnivis edit`` uses by default, in input pixels (None: by op).
        trainer: engine settings (epochs, devices, precision, checkpoints ...).
    """

    op: str = "superres"
    data: str = "builtin:photos-train"
    style_data: str | None = None
    test_data: str | None = "builtin:photos"
    strict: bool = False
    scale: int = 2
    noise: str = "gaussian"
    sigma: float = 25.0
    sigma_min: float = 5.0
    sigma_max: float = 50.0
    masks: str = "mixed"
    arch: str | None = None
    model: str = "omnivis_resnet_micro"
    init_from: str | None = None
    style_weight: float = 10.0
    width: int | None = None
    blocks: int | None = None
    crop_size: int | None = None
    crops_per_image: int = 16
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_epochs: float = 0.5
    tile: int | None = None
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=None))

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"unknown op '{self.op}'; choose one of {', '.join(OPS)}")
        if self.noise not in NOISES or self.masks not in MASKS:
            raise ConfigError(f"noise must be one of {', '.join(NOISES)} and masks one of {', '.join(MASKS)}")
        if self.op == "superres" and self.scale not in (2, 4):
            raise ConfigError(f"superres scale must be 2 or 4, got {self.scale}")
        if self.arch is not None and self.arch not in OP_ARCHS[self.op]:
            raise ConfigError(f"arch '{self.arch}' does not do {self.op}; choose {' or '.join(OP_ARCHS[self.op])}")
        if (self.width is not None and self.width < 4) or (self.blocks is not None and self.blocks < 1) or \
                self.batch_size < 1 or self.crops_per_image < 1 or self.lr <= 0:
            raise ConfigError("width must be >= 4, blocks, batch_size and crops_per_image >= 1, lr > 0")
        if self.crop_size is not None and (self.crop_size < 16 or self.crop_size % (4 * self.scale_factor)):
            raise ConfigError(f"crop_size must be >= 16 and a multiple of {4 * self.scale_factor}, got {self.crop_size}")
        if self.tile is not None and self.tile < 0:
            raise ConfigError(f"tile must be >= 0 (0: whole image at once), got {self.tile}")

    @property
    def scale_factor(self) -> int:
        return self.scale if self.op == "superres" else 1

    def degradation(self) -> Degradation:
        return Degradation(op=self.op, scale=self.scale_factor, noise=self.noise, sigma=self.sigma,
                           sigma_range=(self.sigma_min, self.sigma_max), masks=self.masks,
                           mask_cell=self.crop_size if self.op == "inpaint" else None)


def with_op_defaults(config: EditConfig) -> EditConfig:
    """``config`` with what it left None (arch, width, blocks, crop size, tile) set to its op's default."""
    return replace(config, arch=config.arch or DEFAULT_ARCH[config.op],
                   width=config.width or DEFAULT_WIDTH.get(config.op, 32),
                   blocks=config.blocks or DEFAULT_BLOCKS.get(config.op, 6),
                   crop_size=config.crop_size or DEFAULT_CROP[config.op],
                   tile=DEFAULT_TILE[config.op] if config.tile is None else config.tile)


def build_model(config: EditConfig) -> torch.nn.Module:
    config = with_op_defaults(config)
    if config.op == "style":
        from omnivis.models.backbones import create_backbone
        from omnivis.models.style import StyleTransferNet

        return StyleTransferNet(create_backbone(config.model, pretrained=config.init_from), STYLE_LEVEL, config.width)
    return build_restoration_net(config.arch or DEFAULT_ARCH[config.op], config.scale_factor, config.width, config.blocks,
                                 conditioned=config.op == "enhance")


class EditModule(pl.LightningModule):
    """Trains ``model`` to map degraded crops to clean ones with an L1 loss (inpaint: on the hole)."""

    def __init__(self, config: EditConfig) -> None:
        super().__init__()
        self.config = config
        self.model = build_model(config)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        image, clean, mask, condition = batch
        if self.config.op == "style":  # (content crops, style crops)
            loss, parts = self.model.training_loss(image, clean, self.config.style_weight)
            log_training(self, {"train/loss": loss, **parts})
            return loss
        restored = run_restoration(self.model, self.config.op, image, mask, condition).float()
        if self.config.op == "inpaint":  # known pixels are copied through: only the hole is learned
            loss = (restored - clean).abs().mul(mask).sum() / (mask.sum() * 3).clamp_min(1.0)
        else:
            loss = F.l1_loss(restored, clean)
        log_training(self, {"train/loss": loss})
        return loss

    def configure_optimizers(self) -> dict:
        model = self.model.decoder if self.config.op == "style" else self.model  # the encoder is frozen
        return warmup_cosine_for(self, model, self.config.lr, self.config.weight_decay, self.config.warmup_epochs)


def bundle_config(config: EditConfig, photos: int) -> dict:
    return {
        "task": TASK,
        "img_size": config.crop_size,
        "in_chans": 3,
        "data": config.data,
        "split": {"train_photos": photos, "crops_per_image": config.crops_per_image,
                  "test_data": config.test_data},
        "op": config.op,
        "arch": config.arch,
        "scale": config.scale_factor,
        "width": config.width,
        "blocks": config.blocks,
        "degradation": config.degradation().to_dict(),
        **({"encoder": config.model, "init_from": config.init_from, "level": STYLE_LEVEL} if config.op == "style" else {}),
        "tile": config.tile,
        "train_config": config_to_dict(config),
    }


def edit_plan(config: EditConfig) -> TrainingPlan:
    """Crops of the training photos, degraded on the fly; scored on ``test_data`` after training."""
    crop_given = config.crop_size is not None
    config = with_op_defaults(config)
    choices = [] if crop_given else [f"crop_size {config.crop_size}: clean training crops of {config.crop_size} px "
                                     "(--crop-size)"]
    photos = resolve_classification_data(config.data, strict=config.strict)
    if not photos.samples:
        raise DataError(f"{config.data}: no photos to train on")
    seed = config.trainer.seed
    styles = resolve_classification_data(config.style_data, strict=config.strict) if config.style_data else None
    train_set = EditCropDataset(photos, config.degradation(), config.crop_size, config.crops_per_image, seed, styles)
    choices += cache_datasets({"training photos": train_set}, config.trainer.cache_mb, config.trainer.progress)
    datamodule = SeededDataModule(train_set, None, batch_size=min(config.batch_size, len(train_set)),
                                  num_workers=config.trainer.num_workers, seed=seed)
    choices.append(workers_line(datamodule.num_workers, config.trainer.num_workers))
    choices.append(f"{config.op}: {config.degradation().describe()}; {config.arch} network, width {config.width}"
                   + (f", {config.blocks} blocks" if config.arch in ("residual", "inpaint") else "")
                   + (f", encoder {config.model} ({config.init_from or 'seeded random weights'})"
                      if config.op == "style" else ""))
    test_data = config.test_data
    return TrainingPlan(
        command="omnivis train edit",
        datamodule=datamodule,
        build_module=lambda: EditModule(config),
        header=bundle_config(config, len(photos.samples)),
        evaluate=(lambda bundle, progress: evaluate_edit(bundle, data=test_data, out_dir=bundle, progress=progress))
        if test_data else None,
        summary_keys=None,
        skipped=photos.skipped,
        card=lambda header, metrics: model_card(header, metrics, usage=edit_usage(config.op)),
        config=config,
        choices=choices,
        step_range=EDIT_STEPS,
    )


def train_edit(config: EditConfig, out: str | Path, resume: bool = False,
               callbacks: list[pl.Callback] | None = None) -> Path:
    """Train an edit network on synthesized degradations and score it on the test photos; returns ``out``."""
    return run_training(edit_plan, config, out, resume, callbacks)


def edit_usage(op: str) -> tuple[str, ...]:
    """The commands a model card shows for a bundle of ``op``."""
    first = {"inpaint": "omnivis edit THIS_FOLDER photo.jpg --mask hole.png --out edited/   # or --box x,y,w,h",
             "style": "omnivis edit THIS_FOLDER photo.jpg --style painting.jpg --out styled/"}.get(
        op, "omnivis edit THIS_FOLDER photo.jpg --out edited/")
    return (first, "omnivis serve THIS_FOLDER   # POST /api/edit/NAME, or OpenAI's /v1/images/edits",
            "omnivis eval THIS_FOLDER --data MY_CLEAN_PHOTOS")
