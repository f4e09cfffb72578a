"""``omnivis explain``: saliency maps of a bundle's predictions, with the model-randomization sanity check."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json
from omnivis.errors import OmnivisError
from omnivis.inference.explain_methods import METHODS


def explain_command(
    bundle: Path = typer.Argument(..., help="A classify, segment, detect, multitask or face bundle folder."),
    inputs: Optional[List[Path]] = typer.Argument(
        None, help="Images or folders (default: the held-out images of --data or of the bundle's training data)."),
    method: str = typer.Option("gradcam", help=" | ".join(METHODS) + " (rollout: ViTs only)."),
    target: Optional[str] = typer.Option(None, help="Explain this class (name or index) instead of the prediction."),
    layer: Optional[str] = typer.Option(
        None, help="A module of the timm backbone (default: the deepest feature level at least 7 cells wide)."),
    head: Optional[str] = typer.Option(None, help="Multitask bundles: classify or segment (default: classify)."),
    compare: Optional[Path] = typer.Option(
        None, help="Face bundles: explain each photo's verification score against this photo (cosine similarity)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Segmenters and detectors: maps for at most this many "
                              "predicted classes (largest first) or boxes (best first) per image."),
    sanity: bool = typer.Option(False, "--sanity", help="Also run the model-randomization test (Spearman vs "
                                "the model with its top blocks re-initialized; < 0.5 passes)."),
    data: Optional[str] = typer.Option(None, help="Without IMAGES: take the held-out images of this data spec."),
    limit: int = typer.Option(64, min=1, help="Without IMAGES: explain at most this many held-out images."),
    out: Optional[Path] = typer.Option(None, help="Folder for overlays, explanations.json and report.html "
                                       "(default: BUNDLE/explanations)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print, per image, each target, its score, the map's peak "
                                 "(x, y) in the image's pixels and the share of its mass in the top 10% of pixels."),
) -> None:
    """Explain a bundle's predictions with heat maps (Grad-CAM family or attention rollout).

    Classifiers: the predicted class (or --target); segmenters: each predicted class's pixels;
    detectors: each detected box; face models: the similarity to --compare PHOTO. Works for every timm
    backbone with no code: the layer and the reshape of its output come from the backbone's feature
    levels. Writes one overlay PNG per image and target, explanations.json and an HTML report with
    the most and least confident images.
    """
    from omnivis.bundle import load_bundle
    from omnivis.inference.explain import check_method
    from omnivis.inference.explain_run import explain_images
    from omnivis.inference.explain_tasks import adapter_for
    from omnivis.metrics.explain_report import write_explain_report
    from omnivis.metrics.report import write_json
    from omnivis.tasks.registry import get_task

    check_method(method)
    task = get_task(load_bundle(bundle).task)
    if task.predictor is None:
        raise OmnivisError(f"{bundle}: a '{task.name}' bundle makes no predictions to explain")
    predictor = task.predictor(bundle)
    adapter = adapter_for(predictor, head, compare)
    if inputs:
        from omnivis.data.images import expand_image_paths

        images = expand_image_paths(inputs)
        names = [str(p) for p in images]
    else:
        images, names = held_out_images(predictor, data, limit)
    out_dir = out or Path(bundle) / "explanations"
    report = explain_images(adapter, images, method=method, layer=layer, target=target, top_k=top_k, sanity=sanity,
                            out_dir=out_dir, names=names, batch_size=batch_size, progress=not as_json)
    report.pop("maps")
    report["bundle"] = str(bundle)
    report["json"] = str(write_json(report, out_dir / "explanations.json"))
    report["report_html"] = str(write_explain_report(report, out_dir / "report.html",
                                                     f"{method} maps of {Path(bundle).name}"))
    if as_json:
        print_json(report)
        return
    table = Table("image", "target", "score", "peak (x, y)", "top-10% mass",
                  *(["sanity rho"] if sanity else []), title=f"{method} at {report['layer']}")
    table.columns[0].overflow = "fold"
    for result in report["results"]:
        for e in result["explanations"]:
            table.add_row(result["image"], e["target"], f"{e['score']:.3f}", f"{e['peak'][0]}, {e['peak'][1]}",
                          f"{e['top10_mass']:.3f}", *([str(e.get("sanity_spearman"))] if sanity else []))
    console.print(table)
    if sanity:
        s = report["sanity"]
        verdict = "passed" if s["passed"] else "FAILED: the maps barely depend on the trained weights"
        console.print(f"sanity check: mean Spearman {s['mean_spearman']} vs the randomized model ({verdict})")
    console.print(f"wrote {report['json']} and {report['report_html']}")


def held_out_images(predictor, data: str | None, limit: int) -> tuple[list, list[str]]:
    """The bundle's held-out images (re-derived from its recorded split) of ``data`` or its training data."""
    cfg = predictor.config
    spec = data or cfg.get("data")
    if predictor.task == "classify":
        from omnivis.data.builtin import resolve_classification_data
        from omnivis.inference.base import held_out_wanted
        from omnivis.inference.classify import class_split

        loaded = resolve_classification_data(spec, manifest=cfg.get("manifest") if spec == cfg.get("data") else None)
        if held_out_wanted("auto", spec, cfg.get("data")) and cfg["split"]["val_fraction"]:
            loaded = loaded.subset(class_split(loaded, cfg["split"]["val_fraction"], cfg["split"]["seed"])[1])
        samples = loaded.samples[:limit]
        return [s.source for s in samples], [s.name for s in samples]
    if predictor.task == "segment":
        from omnivis.inference.segment import _eval_data

        samples = _eval_data(cfg, spec, "auto", False)[0].samples[:limit]
        return [s.image for s in samples], [s.name for s in samples]
    raise OmnivisError(f"give images to explain: a '{predictor.task}' bundle has no held-out images to pick from")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("explain")(explain_command)
