"""``omnivis train multitask``: one backbone; classification, segmentation and detection heads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivis.cli import (
    Accelerator,
    CheckpointEvery,
    Devices,
    NumNodes,
    Precision,
    Progress,
    Resume,
    Strategy,
    Workers,
    train_app,
    _train_and_report,
)


@train_app.command("multitask")
def train_multitask_command(
    out: Path = typer.Option(..., help="Run folder; becomes the bundle."),
    data: str = typer.Option("builtin:shapes", help="builtin:shapes, or a COCO JSON file (boxes, instance masks)."),
    images: Optional[Path] = typer.Option(None, help="COCO images folder (default: the JSON's folder)."),
    labels: Optional[Path] = typer.Option(
        None, help="CSV 'path,label' of image-level classes (paths relative to --images); needed for classify."
    ),
    val_fraction: float = typer.Option(0.2, help="Held-out fraction of a COCO file (seeded by --seed)."),
    strict: bool = typer.Option(False, "--strict", help="A bad COCO record, image or CSV row is an error, not skipped."),
    tasks: str = typer.Option("classify,segment", help="Heads, comma-separated: any of classify, segment, detect."),
    weighting: str = typer.Option("uncertainty", help="fixed (--cls-weight, --seg-weight, --det-weight) | uncertainty (learned)."),
    cls_weight: float = typer.Option(1.0, help="Classification loss weight (fixed weighting)."),
    seg_weight: float = typer.Option(1.0, help="Segmentation loss weight (fixed weighting)."),
    det_weight: float = typer.Option(1.0, help="Detection loss weight (fixed weighting)."),
    seg_label_fraction: float = typer.Option(1.0, help="Fraction of training images that keep their mask."),
    cls_label_fraction: float = typer.Option(1.0, help="Fraction of training images that keep their class label."),
    det_label_fraction: float = typer.Option(1.0, help="Fraction of training images that keep their boxes."),
    arch: str = typer.Option("fpn", help="Segmentation decoder: fpn | unet | deeplabv3plus."),
    model: str = typer.Option("omnivis_resnet_tiny", help="Backbone: any timm model name or omnivis preset."),
    img_size: int = typer.Option(64, help="Square input size (a multiple of 32)."),
    channels: int = typer.Option(3, help="3 for RGB, 1 for grayscale."),
    epochs: int = typer.Option(12),
    max_steps: int = typer.Option(-1),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(3e-3),
    weight_decay: float = typer.Option(1e-4),
    decoder_width: int = typer.Option(64),
    fpn_channels: int = typer.Option(64, help="Width of the detection FPN and FCOS head (multiple of 32, >= 64)."),
    score_threshold: float = typer.Option(0.5, help="Lowest box score predict reports."),
    train_images: int = typer.Option(600, help="Training scenes (builtin:shapes)."),
    val_images: int = typer.Option(200, help="Validation scenes (builtin:shapes)."),
    train_seed: int = typer.Option(0, help="Seed of the training scenes."),
    val_seed: int = typer.Option(1, help="Seed of the validation scenes."),
    init_from: Optional[Path] = typer.Option(None, help="Bundle or safetensors file to start the backbone from."),
    resume: Resume = False,
    accelerator: Accelerator = "auto",
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    precision: Precision = "auto",
    seed: int = typer.Option(0, help="Seeds the label dropping, data order, augmentation and weights."),
    checkpoint_every: CheckpointEvery = 0,
    workers: Workers = 0,
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train classification, segmentation and/or detection heads on one backbone; --out becomes one bundle.

    With --resume, the run's own run_config.json is used and the other options are ignored.
    """
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config
    from omnivis.tasks.multitask import MultitaskConfig, train_multitask

    if resume:
        config = load_run_config(MultitaskConfig, out)
        config.trainer.progress = progress and not as_json
    else:
        config = MultitaskConfig(
            data=data, images=str(images) if images else None, labels=str(labels) if labels else None,
            val_fraction=val_fraction, strict=strict, tasks=tasks, weighting=weighting, cls_weight=cls_weight, seg_weight=seg_weight,
            det_weight=det_weight, seg_label_fraction=seg_label_fraction, cls_label_fraction=cls_label_fraction,
            det_label_fraction=det_label_fraction, arch=arch, model=model, fpn_channels=fpn_channels,
            score_threshold=score_threshold,
            img_size=img_size, channels=channels, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            decoder_width=decoder_width, train_images=train_images, val_images=val_images, train_seed=train_seed,
            val_seed=val_seed, init_from=str(init_from) if init_from else None,
            trainer=TrainerConfig(
                epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
                num_nodes=num_nodes, precision=precision, seed=seed, checkpoint_every_n_steps=checkpoint_every,
                num_workers=workers, progress=progress and not as_json,
            ),
        )
    _train_and_report(train_multitask, config, out, resume, as_json)
