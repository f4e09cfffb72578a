"""What the command modules share: the consoles, JSON and table output, the run options every
train command takes, and the report a training run prints.

Light on purpose (typer and rich only): ``omnivis --help`` imports it.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

# The options of a training run that are not config fields (the config's own come from the
# dataclass: omnivis.commands.options). `--out` is declared by each command, with its own help.
Resume = Annotated[bool, typer.Option(
    "--resume",
    help="Continue the run in --out from its last checkpoint (its run_config.json decides the other options).")]
ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config",
    help="A YAML or JSON config, e.g. a run's run_config.json; options given on the command line override it.",
    show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON.")]


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def is_main_process() -> bool:
    """Global rank 0, as Lightning resolved it (torchrun sets RANK/GROUP_RANK, srun SLURM_PROCID, a
    hand launch NODE_RANK/LOCAL_RANK): the one process of a multi-process run that reports."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def metrics_table(title: str, metrics: dict) -> None:
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def train_and_report(train: Callable, config: object, out: Path, resume: bool, as_json: bool) -> None:
    """Run ``train(config, out, resume=resume)`` and print the bundle's metrics (rank 0 only)."""
    bundle = train(config, out, resume=resume)
    if not is_main_process():
        return
    metrics = json.loads((bundle / "metrics.json").read_text())
    if as_json:
        print_json({"bundle": str(bundle), **metrics})
        return
    metrics_table("validation", metrics)
    console.print(f"bundle: [bold]{bundle}[/]  (logs: {bundle / 'logs'}, checkpoints: {bundle / 'checkpoints'})")


def output_names(paths: list[Path]) -> list[str]:
    """One PNG name per input, its stem; a stem met again gets the input's position appended."""
    used: set[str] = set()
    names = []
    for index, path in enumerate(paths):
        name = f"{path.stem}.png" if path.stem not in used else f"{path.stem}_{index}.png"
        used.add(path.stem)
        names.append(name)
    return names


def quiet_libraries() -> None:
    """Keep the terminal for our own progress and results, not Lightning's banner lines."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import; override after)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*val_dataloader.* but have no .*validation_step.*")  # no held-out set
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # a frozen teacher or backbone
