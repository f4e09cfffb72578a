"""``omnivis eval``: a bundle on labelled data, with its task's metrics."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, format_number, metrics_table, print_json
from omnivis.errors import OmnivisError


def eval_command(
    bundle: Path = typer.Argument(..., help="A bundle folder."),
    data: Optional[str] = typer.Option(None, help="Labelled data (default: the bundle's training data)."),
    split: str = typer.Option("auto", help="auto | val | all (auto: the held-out split of the training data)."),
    out: Optional[Path] = typer.Option(None, help="Folder for eval.json and the confusion matrix (default: the bundle)."),
    strict: bool = typer.Option(False, "--strict"),
    reference: Optional[Path] = typer.Option(
        None, help="Generators: the classifier bundle whose features score FID/KID (default: the one recorded at training)."
    ),
    inception_weights: Optional[Path] = typer.Option(
        None, help="Generators: also the standard Inception-v3 FID/KID, from this .safetensors weights file."
    ),
    num_samples: Optional[int] = typer.Option(
        None, min=2, help="Generators: how many generated (and real) images FID/KID compare (default 500)."
    ),
    per_class: Optional[int] = typer.Option(
        None, min=1, help="Generators: samples per class for the class-accuracy check (default 50)."
    ),
    images: Optional[Path] = typer.Option(None, help="Detection, multitask: the image folder of a COCO --data file; "
                                          "face: the folder of people a pairs.txt --data names."),
    labels: Optional[Path] = typer.Option(None, help="Multitask: a path,label CSV of image-level classes for --data."),
    groups: Optional[Path] = typer.Option(None, help="A CSV path,group of the evaluated images (face: identity,group): "
                                          "every metric per group, the largest gap and ratio, and per_group.png."),
    onnx: Optional[Path] = typer.Option(
        None, help="Classify, segment, detect: score this file of `omnivis export` (onnxruntime) instead of the torch model."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Evaluate a bundle on labelled data with its task's metrics (accuracy, mAP, mIoU, FID ...)."""
    from omnivis.bundle import load_bundle
    from omnivis.metrics.report import write_json
    from omnivis.tasks.registry import get_task

    task = get_task(load_bundle(bundle).task)
    out_dir = out or bundle
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    extra = {}
    options = (("reference", reference, "generator"), ("inception_weights", inception_weights, "generator"),
               ("num_samples", num_samples, "generator"), ("per_class", per_class, "generator"),
               ("images", images, "detection, multitask and face"), ("labels", labels, "multitask"),
               ("onnx", onnx, "classify, segment and detect"),
               ("groups", groups, "classify, segment, detect, multitask and face"))
    for option, value, kind in options:
        if value is None:
            continue
        if option not in inspect.signature(task.evaluate).parameters:
            flag = "--" + option.replace("_", "-")
            raise OmnivisError(f"{flag} applies to {kind} bundles; {bundle} is a '{task.name}' bundle")
        extra[option] = value if isinstance(value, int) else str(value)
    metrics = task.evaluate(bundle, data=data, split=split, out_dir=out_dir, strict=strict, progress=not as_json, **extra)
    write_json(metrics, Path(out_dir) / "eval.json")
    if as_json:
        print_json(metrics)
        return
    metrics_table(f"{task.name} on {metrics.get('data', data)}", metrics)
    per_class = metrics.get("per_class", {})
    if per_class and all(isinstance(row, dict) for row in per_class.values()):
        # whatever numbers the task reports per class (P/R/F1, AP, IoU/Dice, accuracy), one column each
        columns = [k for k in next(iter(per_class.values())) if isinstance(next(iter(per_class.values()))[k], (int, float))]
        table = Table("class", *columns, title="per class")
        for name, row in per_class.items():
            table.add_row(str(name), *(format_number(row.get(c)) for c in columns))
        console.print(table)
    report = metrics.get("per_group")
    if isinstance(report, dict):
        group_table(report)
    pictures = [str(v) for k, v in metrics.items() if k.endswith("_png") and v]
    pictures += [report["png"]] if isinstance(report, dict) and report.get("png") else []
    console.print(f"wrote {Path(out_dir) / 'eval.json'}" + (f" and {', '.join(pictures)}" if pictures else ""))


def group_table(report: dict) -> None:
    """Print ``per_group``: a row per group (its count and headline metrics), then the gap and ratio."""
    gaps, ratios = report.get("largest_gap", {}), report.get("ratio", {})
    columns = [m for m in report.get("headline", []) if m in gaps] or list(gaps)
    table = Table("group", "count", *columns, title=f"per group ({report.get('csv', '')})")
    for name, row in report["groups"].items():
        count = str(report.get("counts", {}).get(name, ""))
        table.add_row(str(name), count, *(format_number(row.get(c)) for c in columns))
    table.add_row("largest gap", "", *(format_number(gaps.get(c)) for c in columns), style="bold")
    table.add_row("ratio min/max", "", *(format_number(ratios.get(c)) for c in columns), style="bold")
    console.print(table)
    if report.get("rows_outside_split"):
        console.print(f"{report['rows_outside_split']} rows of the groups file name images outside the evaluated split")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("eval")(eval_command)
