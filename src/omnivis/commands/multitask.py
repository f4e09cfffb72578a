"""``omnivis train multitask``: one backbone; classification, segmentation and detection heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, train_and_report
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.multitask:MultitaskConfig"


def train_multitask(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the bundle.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Train classification, segmentation and/or detection heads on one backbone; --out becomes one bundle.

    Every MultitaskConfig field is an option; --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.multitask import train_multitask as train

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    train_and_report(train, config, out, resume, as_json)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("multitask", cls=config_command(CONFIG))(train_multitask)
