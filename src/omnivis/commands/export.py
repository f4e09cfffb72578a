"""``omnivis export``: a bundle as one ONNX file (float or int8), checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json
from omnivis.errors import ConfigError

FORMATS = ("onnx",)


def export_command(
    bundle: Path = typer.Argument(..., help="A bundle folder (classify, segment, detect incl. Mask R-CNN, "
                                  "multitask, face, edit: its restoration network, or generate: its decoder "
                                  "or denoiser)."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to int8 (onnxruntime static QDQ, per-channel)."),
    calibration: Optional[str] = typer.Option(
        None, help="Images to calibrate int8 and check the export on: a folder or data spec (default: the "
        "bundle's training data)."),
    out: Optional[Path] = typer.Option(None, help="The ONNX file (default: BUNDLE/model.onnx, BUNDLE/model.int8.onnx)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a bundle's graph to ONNX: uint8 NCHW images at the bundle's size in, normalization and
    post-processing inside, dynamic batch (detectors: one image per call). A parity check against
    PyTorch (batch 1, 3, 7) and, with --int8, the quantization report go to BUNDLE/export.json."""
    from omnivis.deploy.onnx_export import export_bundle

    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{format}'")
    report = export_bundle(bundle, out=out, int8=int8, calibration=calibration)
    if as_json:
        print_json(report)
        return
    table = Table("batch", "max |onnx - torch|", "same answers")
    for row in report["parity"]:
        table.add_row(str(row["batch"]), f"{row['max_abs_difference']:.2e}", f"{row['same_answers']:.4f}")
    if report["task"] in ("generate", "edit"):  # their own inputs; a loop or the tiling outside the graph
        inputs = ", ".join(f"{name} {v['dtype']} {tuple(v['shape'])}" for name, v in report["inputs"].items())
        console.print(f"wrote [bold]{report['file']}[/] ({report.get('method') or report['op']}): inputs {inputs}; "
                      f"outputs {', '.join(report['outputs'])}")
        console.print(table)
        console.print(f"outside the graph: {report['outside_the_graph']}")
        console.print(f"report: {Path(bundle) / 'export.json'}")
        return
    console.print(f"wrote [bold]{report['file']}[/]: input {report['input']['dtype']} "
                  f"{tuple(report['input']['shape'])} {report['input']['layout']}, outputs {', '.join(report['outputs'])}")
    console.print(table)
    latency = ", ".join(f"{k} {v:.2f} ms" for k, v in report["latency_ms_batch1"].items())
    console.print(f"onnxruntime, one image: {latency}")
    if "int8" in report:
        q = report["int8"]
        kept = ", ".join(q["kept_in_float"]) or "none"
        verdict = "within" if q["within_budget"] else "[bold red]NOT within[/]"
        console.print(f"int8 ({q['method']}): keeps {q['same_answers']:.4f} of float's answers, {verdict} the budget "
                      f"{q['budget']}; kept in float: {kept}; {report['bytes']['int8']:,} bytes "
                      f"(float {report['bytes']['float']:,})")
    console.print(f"report: {Path(bundle) / 'export.json'}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("export")(export_command)
