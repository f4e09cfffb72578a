"""``omnivis demo``: train, evaluate and predict on built-in digits, then an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from omnivis.commands._shared import console


def demo_command(
    out: Path = typer.Option(Path("omnivis-demo"), help="Where the demo writes its bundle and report."),
    epochs: int = typer.Option(15, help="Training epochs on digits."),
) -> None:
    """Train, evaluate and predict on built-in digits, then write an HTML report."""
    from omnivis.demo import run_demo

    report = run_demo(out, epochs=epochs, console=console)
    console.print(f"\n[bold green]demo finished[/]: report at [bold]{report}[/]")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("demo")(demo_command)
