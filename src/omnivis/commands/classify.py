"""``omnivis train classify``: an image classifier on any backbone; the --out folder becomes a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, train_and_report
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.classify:ClassifyConfig"


def train_classify(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the bundle.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Train an image classifier; the --out folder becomes a bundle.

    Every ClassifyConfig field is an option; --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.classify import train_classifier

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    train_and_report(train_classifier, config, out, resume, as_json)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("classify", cls=config_command(CONFIG))(train_classify)
