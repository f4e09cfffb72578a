"""``omnivis predict``: a bundle's predictions on images or folders."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json
from omnivis.errors import OmnivisError
from omnivis.inference.explain_methods import METHODS


def predict_command(
    bundle: Path = typer.Argument(..., help="A bundle folder."),
    inputs: List[Path] = typer.Argument(..., help="Images or folders of images."),
    top_k: int = typer.Option(5, "--top-k", help="How many classes to list per image (classifiers)."),
    out: Optional[Path] = typer.Option(
        None, help="Folder for drawn predictions (boxes, masks, overlays) where the task makes pictures."
    ),
    score_threshold: Optional[float] = typer.Option(
        None, help="Detectors: keep detections scoring at least this (default: the bundle's own threshold)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON."),
    backend: str = typer.Option("torch", help="torch, or onnx: run the file of `omnivis export` with onnxruntime."),
    onnx_file: Optional[Path] = typer.Option(
        None, "--onnx", help="--backend onnx: the ONNX file (default: BUNDLE/model.onnx)."),
    explain: Optional[str] = typer.Option(
        None, help=f"Classify, segment, multitask: add heat maps of this method ({', '.join(METHODS)}) to each "
        "prediction, drawn into --out."),
) -> None:
    """Predict with a bundle on images or folders.

    Every task's predictor returns one JSON-ready dict per image; tasks whose answers are pictures
    (detection, segmentation) also draw them into --out (default: BUNDLE/predictions). --backend onnx
    gives the same JSON from an exported file (classify and segment bundles).
    """
    from omnivis.bundle import load_bundle
    from omnivis.data.images import expand_image_paths
    from omnivis.tasks.registry import get_task

    if top_k < 1:
        raise OmnivisError(f"--top-k must be >= 1, got {top_k}")
    task = get_task(load_bundle(bundle).task)
    if backend not in ("torch", "onnx"):
        raise OmnivisError(f"--backend must be torch or onnx, got '{backend}'")
    predictor = task.predictor(bundle)
    if backend == "onnx":
        predictor.use_onnx(onnx_file or Path(bundle) / "model.onnx")
    if score_threshold is not None:
        if not hasattr(predictor, "score_threshold"):
            raise OmnivisError(f"--score-threshold applies to detection and multitask bundles; {bundle} is a "
                               f"'{task.name}' bundle")
        if not 0.0 <= score_threshold <= 1.0:
            raise OmnivisError(f"--score-threshold must be in [0, 1], got {score_threshold}")
        predictor.score_threshold = score_threshold
    paths = expand_image_paths(inputs)
    results = predictor.predict(paths, top_k=top_k, names=[str(p) for p in paths])
    drawn: list[Path] = []
    if hasattr(predictor, "save_visualizations"):
        drawn = predictor.save_visualizations(paths, results, out or Path(bundle) / "predictions")
    if explain is not None:
        drawn += add_explanations(predictor, paths, results, explain, out or Path(bundle) / "predictions")
    if as_json:
        print_json(results)
        return
    if results and "top_k" in results[0]:
        table = Table("image", "prediction", "score", f"top-{top_k}")
        table.columns[0].overflow = "fold"
        for r in results:
            others = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top_k"])
            table.add_row(r["image"], r["label"], f"{r['score']:.3f}", others)
    else:  # every non-classification predictor gives each result a one-line "summary"
        table = Table("image", "prediction")
        table.columns[0].overflow = "fold"
        for r in results:
            table.add_row(r["image"], str(r.get("summary", "")))
    console.print(table)
    if drawn:
        console.print(f"drawn predictions: [bold]{Path(drawn[0]).parent}[/] ({len(drawn)} files)")


def add_explanations(predictor, paths: list[Path], results: list[dict], method: str, out: Path) -> list[Path]:
    """Attach ``explanation`` (``omnivis explain``'s per-image rows) to each result; returns the overlays.
    The maps explain the torch model, also under ``--backend onnx`` (whose answers are the same)."""
    from omnivis.inference.explain import check_method
    from omnivis.inference.explain_run import explain_images
    from omnivis.inference.explain_tasks import adapter_for

    report = explain_images(adapter_for(predictor), paths, method=check_method(method), out_dir=out,
                            names=[str(p) for p in paths])
    for result, explained in zip(results, report["results"]):
        result["explanation"] = {"method": method, "layer": report["layer"], "maps": explained["explanations"]}
    return [Path(e["overlay"]) for r in report["results"] for e in r["explanations"]]


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("predict")(predict_command)
