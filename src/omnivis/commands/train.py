"""``omnivis train classify | detect | multitask``: commands that are their config and nothing more.

Each is one row: the task (its registry row trains it), its config dataclass (every field becomes an
option, see :mod:`omnivis.commands.options`) and the line ``--help`` shows. Commands with more to
say (segment's ``--kind``, generate's sampling) have modules of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, train_and_report
from omnivis.commands.options import build_config, config_command

COMMANDS: dict[str, tuple[str, str]] = {
    "align": ("omnivis.tasks.align:AlignConfig",
              "Align an image backbone to a frozen text encoder on captioned images (LiT); --out becomes a bundle "
              "for omnivis zeroshot and omnivis search."),
    "classify": ("omnivis.tasks.classify:ClassifyConfig",
                 "Train an image classifier; the --out folder becomes a bundle."),
    "detect": ("omnivis.tasks.detect:DetectConfig",
               "Train an object detector (or, with --arch maskrcnn, an instance segmenter); --out becomes a bundle."),
    "edit": ("omnivis.tasks.edit:EditConfig",
             "Train an image-editing network (super-resolution, denoising, inpainting, enhancement, style "
             "transfer) on crops of photos; --out becomes a bundle for omnivis edit."),
    "face": ("omnivis.tasks.face:FaceConfig",
             "Train a face embedding (ArcFace by default) on identity folders; --out becomes a bundle."),
    "multitask": ("omnivis.tasks.multitask_config:MultitaskConfig",
                  "Train classification, segmentation and/or detection heads on one backbone; --out becomes one bundle."),
}
"""task -> (its config dataclass as ``module:Class``, the first line of its help)."""


def train_command(task: str, summary: str, config_ref: str) -> Callable[..., None]:
    """The ``omnivis train TASK`` function: build the config from the options, train, report."""

    def command(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Run folder; becomes the bundle.")],
        config_file: ConfigFile = None,
        resume: Resume = False,
        as_json: AsJson = False,
    ) -> None:
        from omnivis.tasks.registry import TASKS

        config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
        train_and_report(TASKS[task].train, config, out, resume, as_json)

    name = config_ref.rsplit(":", 1)[1]
    command.__doc__ = (f"{summary}\n\nEvery {name} field is an option; --config starts from a YAML or JSON file "
                       "of them.\n\nWith --resume, the run's own run_config.json decides and the other options "
                       "are ignored.")
    command.__name__ = f"train_{task}"
    return command


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    for task, (config_ref, summary) in COMMANDS.items():
        train_app.command(task, cls=config_command(config_ref))(train_command(task, summary, config_ref))
