"""``omnivis probe``: how good frozen features are (kNN, linear probe, K-shot) on a held-out split."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json


def probe_command(
    model: str = typer.Argument(..., help="A bundle folder, or a backbone name (random initialization baseline)."),
    data: str = typer.Option("builtin:digits", help="Labelled data: folder, builtin:NAME, torchvision:NAME:ROOT."),
    shots: Optional[int] = typer.Option(None, help="Also report K-shot accuracy (K labelled images per class)."),
    draws: int = typer.Option(5, help="Random draws of the K shots (mean and spread are reported)."),
    val_fraction: float = typer.Option(0.3, help="Held-out fraction (stratified, --seed)."),
    seed: int = typer.Option(0),
    img_size: Optional[int] = typer.Option(None, help="For a backbone name (default 32); bundles use their own."),
    channels: Optional[int] = typer.Option(None, help="For a backbone name (default 3); bundles use their own."),
    knn_k: int = typer.Option(20, help="Neighbours for the kNN probe."),
    raw_pixels: bool = typer.Option(False, "--raw-pixels", help="Also report the raw-pixel logistic-regression baseline."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Frozen-feature quality: kNN, linear-probe and K-shot accuracy on a held-out split."""
    from omnivis.tasks.probe import probe, raw_pixel_baseline

    result = probe(model, data, shots=shots, draws=draws, val_fraction=val_fraction, seed=seed, img_size=img_size,
                   channels=channels, knn_k=knn_k, progress=not as_json)
    rows = {"features": result}
    if raw_pixels:
        rows["raw pixels"] = raw_pixel_baseline(data, val_fraction=val_fraction, seed=seed, shots=shots, draws=draws,
                                                knn_k=knn_k)
    if as_json:
        print_json(rows if raw_pixels else result)
        return
    table = Table("features", "kNN", "linear", f"{shots}-shot (mean ± std)" if shots else "k-shot",
                  title=f"probe on {data}: {result['num_train']} train / {result['num_test']} test images")
    for name, r in rows.items():
        kshot = f"{r['kshot_accuracy_mean']:.4f} ± {r['kshot_accuracy_std']:.4f}" if shots else "-"
        label = f"{model}" if name == "features" else name
        table.add_row(label, f"{r['knn_accuracy']:.4f}", f"{r['linear_accuracy']:.4f}", kshot)
    console.print(table)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("probe")(probe_command)
