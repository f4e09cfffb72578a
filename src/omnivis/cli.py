"""The ``omnivis`` command: the typer app, assembled from the modules in ``omnivis.commands``.

User errors (``OmnivisError``) print one red line and exit 2, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

from omnivis.commands import FAMILIES
from omnivis.commands._shared import err_console, quiet_libraries
from omnivis.errors import OmnivisError

app = typer.Typer(
    name="omnivis",
    help="One vision backbone: pretrain, train, probe, distill, evaluate and predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model for a task.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """omnivis: one vision backbone, one CLI, one bundle format."""


for _family in FAMILIES:
    importlib.import_module(f"omnivis.commands.{_family}").register(app, train_app)


TRAINING_COMMANDS = {"train", "pretrain", "distill", "demo"}  # the ones that build a Lightning Trainer


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    from omnivis.console import format_warnings_one_line

    format_warnings_one_line()
    debug = "--debug" in sys.argv
    if len(sys.argv) > 1 and sys.argv[1] in TRAINING_COMMANDS and not {"--help", "-h"} & set(sys.argv[1:]):
        quiet_libraries()  # imports Lightning (seconds): only commands that train need it
    try:
        app(standalone_mode=True)
    except OmnivisError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; resume a training run with --resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
