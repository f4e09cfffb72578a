"""``omnivis datasets``: the built-in datasets."""

from __future__ import annotations

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json


def datasets_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the built-in datasets (use them as --data builtin:NAME)."""
    from omnivis.data.builtin import list_builtin

    rows = [{"name": f"builtin:{d.name}", "tasks": list(d.tasks), "description": d.description} for d in list_builtin()]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "tasks", "description", title="built-in datasets")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["tasks"]), r["description"])
    console.print(table)
    console.print("Folders of class sub-folders and torchvision:NAME:ROOT (CIFAR10, MNIST, ...) work too.")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    datasets_app = typer.Typer(help="Built-in datasets.", no_args_is_help=True)
    datasets_app.command("list")(datasets_list)
    app.add_typer(datasets_app, name="datasets")
