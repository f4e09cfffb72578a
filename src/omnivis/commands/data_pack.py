"""``omnivis data pack``: write a dataset as litdata shards that every ``--data`` option streams."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivis.commands._shared import console, print_json

KIND_CHOICES = ("auto", "classification", "detection", "segmentation")


def _kind_of(source: str) -> str:
    """``auto``: a ``.json`` file is COCO detection, a folder holding ``images/`` and ``masks/`` is
    segmentation, anything else (class folders, a manifest, ``builtin:`` ...) classification."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".json":
        return "detection"
    if path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir():
        return "segmentation"
    return "classification"


def data_pack(
    source: str = typer.Argument(..., help="A class folder or .csv manifest, builtin:NAME, a COCO .json file, or "
                                 "an images/ + masks/ folder."),
    out: Path = typer.Option(..., "--out", help="A new folder for the shards."),
    shard_size: float = typer.Option(64.0, "--shard-size", help="Target size of each shard (chunk file), in MB."),
    strict: bool = typer.Option(False, "--strict", help="An unreadable image or bad record is an error instead of "
                                "being skipped and counted."),
    kind: str = typer.Option("auto", "--kind", help=f"What the records are: {', '.join(KIND_CHOICES)} (auto: a .json "
                             "is COCO detection, images/ + masks/ is segmentation, else classification)."),
    images: Optional[Path] = typer.Option(None, "--images",
                                          help="The COCO images folder (default: the JSON's folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Pack a dataset into litdata shards (labels, boxes and masks included); train on it with --data SHARDS,
    or copy the folder to object storage and use --data s3://BUCKET/PREFIX."""
    from omnivis.data import shards
    from omnivis.errors import DataError

    if kind not in KIND_CHOICES:
        raise DataError(f"--kind must be one of {', '.join(KIND_CHOICES)}, got '{kind}'")
    kind = _kind_of(source) if kind == "auto" else kind
    progress = dict(strict=strict, progress=True)
    if kind == "classification":
        from omnivis.data.builtin import resolve_classification_data

        written = shards.pack_classification(resolve_classification_data(source, strict=strict), out, shard_size,
                                             **progress)
    elif kind == "detection":
        from omnivis.data.detection import resolve_detection_data

        written = shards.pack_detection(resolve_detection_data(source, images, strict=strict), out, shard_size,
                                        **progress)
    else:
        from omnivis.data.builtin import is_builtin_shapes
        from omnivis.data.masks import load_shapes_segmentation, resolve_segmentation_data

        data = (load_shapes_segmentation(600) if is_builtin_shapes(source)
                else resolve_segmentation_data(source, strict=strict))
        written = shards.pack_segmentation(data, out, shard_size, **progress)
    header = shards.read_shard_header(written)
    chunks = sorted(p for p in written.iterdir() if p.name.startswith("chunk-"))
    megabytes = sum(p.stat().st_size for p in chunks) / 1e6
    summary = {"out": str(written), "kind": header["kind"], "records": header["count"],
               "skipped": len(header.get("skipped", [])), "shards": len(chunks), "megabytes": round(megabytes, 3)}
    if as_json:
        print_json(summary)
        return
    skipped = f", {summary['skipped']} skipped" if summary["skipped"] else ""
    task = {"classification": "classify", "detection": "detect", "segmentation": "segment"}[kind]
    console.print(f"packed {summary['records']} {kind} records{skipped} into {len(chunks)} shard(s), "
                  f"{megabytes:.1f} MB: [bold]{written}[/] (omnivis train {task} --data {written})")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    data_app = typer.Typer(help="Datasets as streamable shards.", no_args_is_help=True)
    data_app.command("pack")(data_pack)
    app.add_typer(data_app, name="data")
