"""``omnivis pretrain``: self-supervised pretraining of a backbone on unlabeled images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, console, is_main_process, metrics_table, print_json
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.pretrain.config:PretrainConfig"


def pretrain_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes a pretrain bundle any task can --init-from.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Self-supervised pretraining of a backbone on unlabeled images.

    Every PretrainConfig field is an option; --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.pretrain import pretrain

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    bundle = pretrain(config, out, resume=resume)
    if not is_main_process():
        return
    metrics = json.loads((bundle / "metrics.json").read_text())
    if as_json:
        print_json({"bundle": str(bundle), **metrics})
        return
    metrics_table(f"{config.method} pretraining", metrics)
    console.print(f"bundle: [bold]{bundle}[/]; use it with --init-from, or measure it with: omnivis probe {bundle}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("pretrain", cls=config_command(CONFIG))(pretrain_command)
