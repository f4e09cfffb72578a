"""``omnivis models``: backbones (timm models and omnivis presets)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json


def models_list(
    pattern: Optional[str] = typer.Argument(None, help="Shell-style pattern, e.g. 'resnet*'."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List backbones: omnivis presets first, then every matching timm model."""
    from omnivis.models.backbones import PRESETS, list_backbones

    names = list_backbones(pattern)
    if as_json:
        print_json(names)
        return
    table = Table("backbone", "note", title=f"{len(names)} backbones" + (f" matching '{pattern}'" if pattern else ""))
    for name in names:
        table.add_row(name, PRESETS.get(name, "timm"))
    console.print(table)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    models_app = typer.Typer(help="Backbones (timm models and omnivis presets).", no_args_is_help=True)
    models_app.command("list")(models_list)
    app.add_typer(models_app, name="models")
