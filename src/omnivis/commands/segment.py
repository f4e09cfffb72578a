"""``omnivis train segment``: semantic segmentation (smp decoders on any backbone) or, with
``--kind instance``, Mask R-CNN through the detection task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivis.cli import (
    Accelerator,
    CheckpointEvery,
    Deterministic,
    Devices,
    NumNodes,
    Patience,
    Precision,
    Progress,
    Resume,
    Strategy,
    TrainSeed,
    Workers,
    train_app,
    _train_and_report,
)
from omnivis.errors import ConfigError

KINDS = ("semantic", "instance")


@train_app.command("segment")
def train_segment(
    out: Path = typer.Option(..., help="Run folder; becomes the bundle."),
    kind: str = typer.Option("semantic", help="semantic (one class per pixel) | instance (Mask R-CNN)."),
    data: str = typer.Option("builtin:shapes", help="Mask folder (images/, masks/, classes.txt) or builtin:shapes."),
    arch: str = typer.Option("fpn", help="Semantic decoder: fpn | unet | deeplabv3plus."),
    model: str = typer.Option("omnivis_resnet_tiny", help="Backbone: any timm model name or omnivis preset."),
    img_size: int = typer.Option(64, help="Square input size (a multiple of 32 for semantic)."),
    channels: int = typer.Option(3, help="3 for RGB, 1 for grayscale."),
    epochs: int = typer.Option(60, help="Passes over the training data (60: about 3 minutes on 2 CPU cores at 64 px)."),
    max_steps: int = typer.Option(-1, help="Stop after this many steps (-1: no limit)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (default: the task's, 16 for semantic)."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate (default: the task's, 3e-3 for semantic)."),
    weight_decay: float = typer.Option(1e-4),
    decoder_width: int = typer.Option(64, help="Decoder channels (semantic)."),
    dice_weight: float = typer.Option(1.0, help="Weight of the Dice loss next to cross-entropy (semantic)."),
    val_fraction: float = typer.Option(0.2, help="Held-out fraction of a mask folder."),
    train_images: int = typer.Option(600, help="builtin:shapes: training scenes."),
    val_images: int = typer.Option(200, help="builtin:shapes: validation scenes."),
    train_seed: int = typer.Option(0, help="builtin:shapes: seed of the training scenes."),
    val_seed: int = typer.Option(1, help="builtin:shapes: seed of the validation scenes (keep it different)."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip", help="Random horizontal flips."),
    scale_min: float = typer.Option(0.5, help="Smallest random-resized-crop area."),
    color_jitter: float = typer.Option(0.2, help="Brightness/contrast/saturation jitter (0: off)."),
    init_from: Optional[Path] = typer.Option(None, help="Bundle or safetensors file to start the backbone from."),
    resume: Resume = False,
    accelerator: Accelerator = "auto",
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    precision: Precision = "auto",
    seed: TrainSeed = 0,
    deterministic: Deterministic = False,
    checkpoint_every: CheckpointEvery = 0,
    patience: Patience = 0,
    workers: Workers = 0,
    strict: bool = typer.Option(False, "--strict", help="A bad image/mask pair is an error, not skipped."),
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train a segmentation model; the --out folder becomes a bundle.

    With --resume, the run's own run_config.json is used and the other options are ignored.
    """
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config

    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    trainer = TrainerConfig(
        epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
        num_nodes=num_nodes, precision=precision, seed=seed, deterministic=deterministic,
        checkpoint_every_n_steps=checkpoint_every, early_stopping_patience=patience, num_workers=workers,
        progress=progress and not as_json,
    )
    init = str(init_from) if init_from else None
    if kind == "instance":
        _train_instance(out, resume, as_json, progress, data=data, model=model, img_size=img_size, channels=channels,
                        init_from=init, batch_size=batch_size, lr=lr, trainer=trainer)
        return

    from omnivis.data.masks import MaskAugment
    from omnivis.tasks.segment import SegmentConfig, train_segmenter

    if resume:
        config = load_run_config(SegmentConfig, out)
        config.trainer.progress = progress and not as_json
        _train_and_report(train_segmenter, config, out, resume, as_json)
        return
    config = SegmentConfig(
        data=data, strict=strict, val_fraction=val_fraction, train_images=train_images, val_images=val_images,
        train_seed=train_seed, val_seed=val_seed, model=model, img_size=img_size, channels=channels, arch=arch,
        decoder_width=decoder_width, init_from=init, weight_decay=weight_decay, dice_weight=dice_weight,
        augment=MaskAugment(hflip=hflip, scale_min=scale_min, color_jitter=color_jitter), trainer=trainer,
        **({"batch_size": batch_size} if batch_size else {}), **({"lr": lr} if lr else {}),
    )
    _train_and_report(train_segmenter, config, out, resume, as_json)


def _train_instance(out: Path, resume: bool, as_json: bool, progress: bool, *, data: str, model: str, img_size: int,
                    channels: int, init_from: str | None, batch_size: int | None, lr: float | None, trainer) -> None:
    """Mask R-CNN lives in the detection task; this only maps the options onto its config."""
    try:
        from omnivis.tasks.detect import DetectConfig, train_detector
    except ImportError:
        raise ConfigError(
            "instance segmentation (Mask R-CNN) is not available in this build; use omnivis train detect --arch maskrcnn"
        ) from None
    from omnivis.tasks.common import load_run_config

    if resume:
        config = load_run_config(DetectConfig, out)
        config.trainer.progress = progress and not as_json
    else:
        extra = {**({"batch_size": batch_size} if batch_size else {}), **({"lr": lr} if lr else {})}
        config = DetectConfig(data=data, images=None, model=model, img_size=img_size, channels=channels, arch="maskrcnn",
                              init_from=init_from, trainer=trainer, **extra)
    _train_and_report(train_detector, config, out, resume, as_json)
