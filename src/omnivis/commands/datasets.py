"""``omnivis datasets``: the built-in datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import track
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


def datasets_export(
    name: str = typer.Argument(..., help="A built-in dataset, e.g. builtin:orl-faces."),
    out: Path = typer.Option(..., help="A new folder: one sub-folder per class (per person), PNG files."),
    captions: bool = typer.Option(False, "--captions", help="Write the captioned version instead (builtin:shapes, "
                                  "builtin:shapes-pairs, builtin:digits): PNGs and a path,caption captions.csv."),
) -> None:
    """Write a built-in dataset as a class folder (for a face gallery, or to look at the images), or with
    --captions as images with a captions.csv (train align, text-to-image)."""
    from PIL import Image

    from omnivis.data.builtin import load_builtin
    from omnivis.data.decode import decode_tensor
    from omnivis.errors import DataError

    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; choose a new --out")
    if captions:
        from omnivis.data.captions import resolve_caption_data, write_caption_folder

        if not name.startswith("builtin:"):
            raise DataError(f"{name}: --captions exports built-in data (builtin:shapes, builtin:shapes-pairs, "
                            "builtin:digits)")
        data = resolve_caption_data(name)
        csv_path = write_caption_folder(data, out)
        console.print(f"wrote {len(data)} images and their captions ([bold]{csv_path}[/])")
        return
    data = load_builtin(name)
    for sample in track(data.samples, description="writing", transient=True):
        stem = Path(sample.name).stem
        target = out / data.classes[sample.label] / f"{stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = decode_tensor(sample.source, "RGB")
        grey = bool((pixels[0] == pixels[1]).all() and (pixels[1] == pixels[2]).all())
        Image.fromarray((pixels[0] if grey else pixels.permute(1, 2, 0)).numpy()).save(target)
    console.print(f"wrote {len(data)} images of {len(data.classes)} classes into [bold]{out}[/]")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    datasets_app = typer.Typer(help="Built-in datasets.", no_args_is_help=True)
    datasets_app.command("list")(datasets_list)
    datasets_app.command("export")(datasets_export)
    app.add_typer(datasets_app, name="datasets")
