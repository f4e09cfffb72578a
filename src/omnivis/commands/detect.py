"""``omnivis train detect``: object detection and (arch maskrcnn) instance segmentation.

``omnivis eval`` and ``omnivis predict`` work on the resulting bundle through the task registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, train_and_report
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.detect:DetectConfig"


def train_detect(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the bundle.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Train an object detector (or, with --arch maskrcnn, an instance segmenter); --out becomes a bundle.

    Every DetectConfig field is an option; --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.detect import train_detector

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    train_and_report(train_detector, config, out, resume, as_json)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("detect", cls=config_command(CONFIG))(train_detect)
