"""The one training path every task runs: a task declares a ``TrainingPlan``, ``run_training`` runs it.

A task module holds only what is its own (config, model, data, header, metrics, predictor); how a run
folder is checked, resumed, seeded, trained, written as a bundle, evaluated and reported is here, once,
so every task behaves the same: a folder that holds a run is never overwritten, the initial weights
depend on the seed only, the bundle is written once by rank 0 and then only its metrics are added,
and whatever the readers skipped is kept in ``skipped.json`` and counted in ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from rich.console import Console

from omnivis import __version__
from omnivis.bundle import model_card, save_bundle, update_metrics
from omnivis.config import config_to_dict
from omnivis.data.skipped import Skipped, skipped_records
from omnivis.engine.trainer import build_trainer, checkpoint_dir, fit
from omnivis.fileio import atomic_write_bytes
from omnivis.metrics.classification import plot_training_curves
from omnivis.seeding import seed_everything
from omnivis.tasks.budget import EPOCHS_OF_STEPS, MAX_STEPS, MIN_STEPS, fit_schedule, resolve_patience
from omnivis.tasks.common import check_run_dir, keep_previous_logs, write_run_config

SKIPPED = "skipped.json"
_console = Console(stderr=True)  # stdout stays for results (--json)


def _model_weights(module: pl.LightningModule) -> dict:
    return module.model.state_dict()


@dataclass(kw_only=True)
class TrainingPlan:
    """What a task hands the shared path, built from its config before anything is written.

    Attributes:
        command: the command that continues this run, e.g. ``omnivis train classify`` (the
            interrupted-run message adds ``--out OUT --resume``).
        datamodule: the seeded training (and validation) data.
        build_module: makes the LightningModule; called right after the RNG is seeded, so the
            initial weights depend on the seed only, not on what ran before.
        header: the bundle's ``config.json`` (task, backbone, classes, preprocessing, split ...).
        weights: LightningModule -> the state dict the bundle holds (default: ``module.model``'s).
        evaluate: (bundle folder, progress) -> metrics of the written bundle on the held-out data
            (pictures go into the bundle folder); None when the run has nothing held out.
        summary_keys: which evaluation numbers ``metrics.json`` keeps (None: every scalar).
        finish: (module, trainer) -> numbers only the trained module knows (loss weights, timings,
            pictures), added to ``metrics.json``; runs on rank 0 before the bundle is written.
        monitor, monitor_mode: the validation value ``best.ckpt`` and early stopping follow.
        loss_monitor: a held-out loss whose fall also keeps early stopping from ending the run.
        partial_graph: some parameters may get no gradient in a step (DDP must look for them).
        skipped: inputs the readers left out, ``(name, reason)`` each (the data's ``.skipped``).
        card: (header, metrics) -> the model card text (default: ``omnivis.bundle.model_card``).
        config: the config with what was read off the data filled in (channels, size, flips ...;
            None: the config as given); it is what ``run_config.json`` keeps and ``--resume`` reads.
        choices: one line per default taken from the data, printed at the start of the run and
            kept in the bundle under ``data_defaults``.
        step_range: the fewest and most steps a data-sized schedule takes (``tasks/budget.py``).
        schedule_epochs: how many epochs' worth of steps that schedule takes within ``step_range``.
        check: (config with its schedule fixed) -> lines to print with the choices; runs before any
            file is written, so what only the schedule decides (a privacy budget the steps cannot
            meet) fails as a ConfigError while ``out`` is still untouched.
    """

    command: str
    datamodule: pl.LightningDataModule
    build_module: Callable[[], pl.LightningModule]
    header: dict
    weights: Callable[[pl.LightningModule], dict] = _model_weights
    evaluate: Callable[[Path, bool], dict] | None = None
    summary_keys: Sequence[str] | None = None
    finish: Callable[[pl.LightningModule, pl.Trainer], dict] | None = None
    monitor: str | None = None
    monitor_mode: str = "max"
    loss_monitor: str | None = None
    partial_graph: bool = False
    skipped: Skipped = field(default_factory=list)
    card: Callable[[dict, dict], str] = model_card
    config: Any = None
    choices: list[str] = field(default_factory=list)
    step_range: tuple[int, int] = (MIN_STEPS, MAX_STEPS)
    schedule_epochs: int = EPOCHS_OF_STEPS
    check: Callable[[Any], list[str]] | None = None


def run_training(
    make_plan: Callable[[Any], TrainingPlan],
    config: Any,
    out: str | Path,
    resume: bool = False,
    callbacks: list[pl.Callback] | None = None,
) -> Path:
    """Train ``config`` as ``make_plan`` declares it and leave a bundle in ``out``; returns ``out``.

    ``out`` also keeps ``checkpoints/`` (``last.ckpt``, ``best.ckpt``: ``resume`` continues from the
    newer), ``logs/``
    (CSV + TensorBoard), ``run_config.json``, ``skipped.json``, ``training_curves.png`` and the
    evaluation's pictures. ``callbacks`` are added to the engine's own (monitoring, tests). On
    ranks other than 0 this returns after training: only rank 0 writes and reads the bundle.
    """
    out = Path(out)
    ckpt = check_run_dir(out, resume)
    plan = make_plan(config)  # reads the data and checks the config before any file is written
    config = plan.config if plan.config is not None else config
    config, schedule = fit_schedule(config, plan.build_module, plan.datamodule, plan.step_range,
                                    plan.schedule_epochs)
    config, stopping = resolve_patience(config, plan.monitor, plan.loss_monitor)
    choices = [*plan.choices, *(line for line in (schedule, stopping) if line)]
    if plan.check is not None:
        choices += plan.check(config)
    if choices and _is_rank_zero():
        for line in choices:
            _console.print(f"[dim]omnivis:[/] {line}", highlight=False, soft_wrap=True)
    seed_everything(config.trainer.seed)
    module = plan.build_module()
    if _is_rank_zero():  # one writer: on several nodes sharing --out, each would rename the same log
        if resume:
            keep_previous_logs(out)
        else:
            write_run_config(out, config)
    trainer = build_trainer(config.trainer, out, monitor=plan.monitor, monitor_mode=plan.monitor_mode,
                            loss_monitor=plan.loss_monitor, extra_callbacks=callbacks, partial_graph=plan.partial_graph)
    if trainer.is_global_zero:
        write_skipped(out, plan.skipped)
    started = time.perf_counter()
    fit(trainer, module, plan.datamodule, ckpt, f"{plan.command} --out {out} --resume")
    if not trainer.is_global_zero:
        return out
    metrics: dict = {"train_time_s": round(time.perf_counter() - started, 2), "train_steps": int(trainer.global_step)}
    metrics.update(keep_best_if_stopped_early(trainer, module, out))
    if plan.finish is not None:
        metrics.update(plan.finish(module, trainer))
    metrics["skipped_inputs"] = len(plan.skipped)
    bundle_header = {**plan.header, "data_defaults": choices}
    if "train_config" in bundle_header:  # the plan built it before the schedule was fixed
        bundle_header["train_config"] = config_to_dict(config)
    header = {**bundle_header, "omnivis_version": __version__}  # what the card shows; save_bundle adds the version too
    save_bundle(out, plan.weights(module), bundle_header, metrics=metrics, card=plan.card(header, metrics))
    if (out / "logs" / "metrics.csv").exists():
        plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    if plan.evaluate is not None:
        scores = plan.evaluate(out, config.trainer.progress)
        metrics.update(summarize(scores, plan.summary_keys))
        update_metrics(out, metrics)
        atomic_write_bytes(out / "README.md", plan.card(header, metrics).encode("utf-8"))
    return out


def keep_best_if_stopped_early(trainer: pl.Trainer, module: pl.LightningModule, out: Path) -> dict:
    """After early stopping, load ``best.ckpt``'s weights into ``module`` (the last ones are
    ``patience`` validations past the best); the numbers that say where it stopped."""
    stopper = trainer.early_stopping_callback
    best = checkpoint_dir(out) / "best.ckpt"
    if stopper is None or not stopper.stopped_epoch or not best.exists():
        return {}
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    return {"early_stopped_epoch": int(stopper.stopped_epoch), "best_epoch": int(checkpoint["epoch"]),
            f"best_{stopper.monitor.replace('/', '_')}": float(stopper.best_score)}


def _is_rank_zero() -> bool:
    """Before the trainer exists: the launcher's rank variables (absent in a single process)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def summarize(metrics: dict, keys: Sequence[str] | None) -> dict:
    """The numbers of an evaluation that ``metrics.json`` keeps: ``keys`` if given, else every scalar."""
    if keys is not None:
        return {k: metrics[k] for k in keys if k in metrics}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_skipped(out: Path, skipped: Skipped) -> Path:
    """Every input the readers left out, with its reason, so no name is lost to a truncated warning."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SKIPPED
    atomic_write_bytes(path, (json.dumps(skipped_records(skipped), indent=2) + "\n").encode("utf-8"))
    return path
