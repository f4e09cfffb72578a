"""Pieces every task shares: run folders, the resolved config, optimizers with warmup + cosine, logging."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from omnivis.config import config_from_dict, config_to_dict
from omnivis.engine.trainer import checkpoint_dir, last_checkpoint
from omnivis.errors import ConfigError
from omnivis.fileio import atomic_write_bytes

RUN_CONFIG = "run_config.json"


def check_run_dir(out: str | Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; a folder that already holds a run is never overwritten."""
    out = Path(out)
    if not resume:  # any checkpoint file, even one too damaged to resume from, marks a run not to overwrite
        if any(checkpoint_dir(out).glob("*.ckpt")):
            raise ConfigError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
        return None
    ckpt = last_checkpoint(out)
    if ckpt is None:
        raise ConfigError(f"{out}: nothing to resume (no readable checkpoint in {checkpoint_dir(out)}); "
                          "start without --resume")
    return ckpt


def write_run_config(out: str | Path, config: object) -> None:
    """Record the resolved config in the run folder (what ``--resume`` reads back)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / RUN_CONFIG, (json.dumps(config_to_dict(config), indent=2) + "\n").encode())


def load_run_config(cls: type, out: str | Path):
    """The config a run in ``out`` was started with, for ``--resume``."""
    path = Path(out) / RUN_CONFIG
    if not path.exists():
        raise ConfigError(f"{path}: not found; is {out} an omnivis training run?")
    return config_from_dict(cls, json.loads(path.read_text()), where=str(path))


def keep_previous_logs(out: str | Path) -> None:
    """Lightning's CSV logger starts metrics.csv afresh on resume: keep the earlier part beside it."""
    csv = Path(out) / "logs" / "metrics.csv"
    if csv.exists():
        part = 1
        while (csv.parent / f"metrics.part{part}.csv").exists():
            part += 1
        csv.rename(csv.parent / f"metrics.part{part}.csv")


def adamw_with_warmup_cosine(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup_steps: int,
    param_groups: list[dict] | None = None,
) -> dict:
    """AdamW (no decay on norms and biases) with linear warmup then cosine decay, stepped per batch.

    Args:
        param_groups: groups to use instead of ``model``'s parameters; a group's ``lr_scale``
            (layer-wise decay) multiplies ``lr`` for it.
    """
    if param_groups is None:
        decay, no_decay = [], []
        for param in model.parameters():
            (no_decay if param.ndim <= 1 else decay).append(param)
        param_groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for group in param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(param_groups, lr=lr)
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine_for(module, model: nn.Module, lr: float, weight_decay: float, warmup_epochs: float,
                      param_groups: list[dict] | None = None) -> dict:
    """``adamw_with_warmup_cosine`` over the run's length as ``module``'s trainer knows it: the total
    number of optimizer steps, and ``warmup_epochs`` of them (fractions allowed) for the warmup."""
    total = int(module.trainer.estimated_stepping_batches)
    per_epoch = max(1, total // max(1, module.trainer.max_epochs or 1))
    return adamw_with_warmup_cosine(model, lr, weight_decay, total, int(warmup_epochs * per_epoch), param_groups)


def log_training(module, values: dict, *, prog_bar: Iterable[str] = ("train/loss",), batch_size: int | None = None) -> None:
    """``module.log`` each training value, but only on the steps whose values a logger writes.

    Lightning's ``self.log`` costs ~0.5 ms a call (it moves its record to the value's device each
    time), which was ~4% of a 20 ms CPU step, while loggers only write every ``log_every_n_steps``
    steps: the values logged in between were never read. Logged metrics are unchanged; the progress
    bar's loss refreshes on those steps. (Falls back to every step if Lightning renames the check.)
    """
    try:
        trainer = module.trainer
    except RuntimeError:  # a step called outside a Trainer (tests, notebooks): nothing records it
        return
    connector = getattr(trainer, "_logger_connector", None)
    if not getattr(connector, "should_update_logs", True):
        return
    shown = set(prog_bar)
    for name, value in values.items():
        module.log(name, value, prog_bar=name in shown, batch_size=batch_size)
