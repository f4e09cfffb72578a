"""``omnivis train detect``: object detection and (arch maskrcnn) instance segmentation.

``omnivis eval`` and ``omnivis predict`` work on the resulting bundle through the task registry.
"""

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


@train_app.command("detect")
def train_detect(
    data: str = typer.Option("builtin:shapes", help="builtin:shapes or a COCO annotations JSON file."),
    images: Optional[Path] = typer.Option(None, help="COCO images folder (default: the JSON's folder)."),
    out: Path = typer.Option(..., help="Run folder; becomes the bundle."),
    arch: str = typer.Option("fcos", help="fcos | fasterrcnn | retinanet | maskrcnn (instance masks)."),
    model: str = typer.Option("omnivis_resnet_tiny", help="Any timm model name or omnivis preset."),
    img_size: int = typer.Option(64, help="Images are resized to this square size."),
    epochs: int = typer.Option(15, help="Passes over the training data."),
    max_steps: int = typer.Option(-1, help="Stop after this many steps (-1: no limit)."),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(2e-3, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(1e-4),
    num_train: int = typer.Option(1200, help="builtin:shapes training scenes (seed 0)."),
    num_test: int = typer.Option(200, help="builtin:shapes test scenes (seed 1)."),
    val_fraction: float = typer.Option(0.2, help="Held-out fraction of a COCO file."),
    score_threshold: float = typer.Option(0.5, help="Lowest score predict reports."),
    fpn_channels: int = typer.Option(64, help="Width of the feature pyramid and heads."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip", help="Random horizontal flips."),
    scale_min: float = typer.Option(1.0, help="Smallest random-crop area, e.g. 0.8 (scale jitter; 1: off)."),
    photometric: bool = typer.Option(False, "--photometric/--no-photometric", help="Random colour distortion."),
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
    strict: bool = typer.Option(False, "--strict", help="A bad COCO record is an error, not skipped."),
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train an object detector (or, with --arch maskrcnn, an instance segmenter); --out becomes a bundle.

    With --resume, the run's own run_config.json is used and the other options are ignored.
    """
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config
    from omnivis.tasks.detect import DetectConfig, train_detector

    if resume:
        config = load_run_config(DetectConfig, out)
        config.trainer.progress = progress and not as_json
        _train_and_report(train_detector, config, out, resume, as_json)
        return
    config = DetectConfig(
        data=data, images=str(images) if images else None, val_fraction=val_fraction, strict=strict, model=model,
        img_size=img_size, arch=arch, init_from=str(init_from) if init_from else None, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, num_train=num_train, num_test=num_test, score_threshold=score_threshold,
        fpn_channels=fpn_channels, hflip=hflip, scale_min=scale_min, photometric=photometric,
        trainer=TrainerConfig(
            epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
            num_nodes=num_nodes, precision=precision, seed=seed, deterministic=deterministic,
            checkpoint_every_n_steps=checkpoint_every, early_stopping_patience=patience, num_workers=workers,
            progress=progress and not as_json,
        ),
    )
    _train_and_report(train_detector, config, out, resume, as_json)
