"""``omnivis distill``: a smaller student classifier learns from a classifier bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import ConfigFile, Resume, console, is_main_process, print_json
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.distill:DistillConfig"
ALIASES = {"model": "student"}
NOT_PRIVATE = "a student of a teacher that saw the data is not private"
EXCLUDE = {"img_size": "the teacher's input size", "channels": "the teacher's channels",
           "dp_epsilon": NOT_PRIVATE, "dp_delta": NOT_PRIVATE, "dp_max_grad_norm": NOT_PRIVATE}


def distill_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the student's bundle.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Distill a classifier bundle into a smaller student; compares accuracy, size and CPU latency.

    Every DistillConfig field is an option (model is --student; the input size and channels are the
    teacher's); --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.distill import distill

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    bundle = distill(config, out, resume=resume)
    if not is_main_process():
        return
    report = json.loads((bundle / "distill_report.json").read_text())
    if as_json:
        print_json({"bundle": str(bundle), **report})
        return
    console.print((bundle / "distill_report.md").read_text())
    console.print(f"student bundle: [bold]{bundle}[/]")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("distill", cls=config_command(CONFIG, aliases=ALIASES, exclude=EXCLUDE, required=("teacher",)))(
        distill_command)
