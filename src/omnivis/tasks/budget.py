"""How long a run trains when the user does not say: steps from the dataset's size, or a time budget.

Ten full epochs are 160 steps for 1,000 images and 9,400 for 60,000; neither is what either needs.
``default_steps`` sizes the schedule by the data: 20 epochs' worth of steps, at least 400 (a small
set still needs that many updates) and at most 3,000 (a large one reaches its accuracy in a few
epochs). Detection and segmentation learn an answer per object or per pixel and take
``DENSE_EPOCHS`` (100) epochs' worth within ``DENSE_STEPS``, at least 2,000 and at most 6,000
steps: on 960 generated 128-px scenes of rotated ellipses, boxes and stars, 20 epochs' worth
(2,000 steps for segmentation, 2,400 for detection) left them at test mIoU 0.495 (whole objects
given the wrong class) and mAP50 0.864; 6,000 steps took them to 0.868 and 0.916 (BENCHMARKS.md (k)).
``--time-budget 5m`` instead measures the step time with a few real steps (data loading included)
and fits the number of steps into the budget. Either way the result is written into the
run's config as ``max_steps`` (and the epochs that cover it), so the learning-rate schedule follows
it and ``--resume`` continues the same schedule.

Early stopping is on by default where a run has held-out data (``resolve_patience``): it stops
after a quarter of the planned epochs (at least 3) without a better validation score (for
classification and segmentation: and without a lower held-out loss, since a small held-out set scores
in coarse steps), and the bundle then keeps the weights of the best score rather than the last.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import statistics
import time
from dataclasses import replace

from omnivis.errors import ConfigError

EPOCHS_OF_STEPS = 20
MIN_STEPS, MAX_STEPS = 400, 3000
DENSE_STEPS = (2000, 6000)  # detection, segmentation
DENSE_EPOCHS = 100  # detection, segmentation
PATIENCE_FRACTION, MIN_PATIENCE = 4, 3
CALIBRATION_STEPS = 6  # the first is left out of the timing (allocations, lazy init)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1.5h"`` or plain seconds -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not found:
        raise ConfigError(f"time budget '{text}' is not a duration; write e.g. 90s, 5m or 1.5h")
    seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"time budget '{text}' must be longer than 0 s")
    return seconds


def steps_per_epoch(train_size: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch: full batches per rank (the last incomplete one is dropped)."""
    return max(1, (train_size // world_size) // max(1, min(batch_size, train_size)))


def default_steps(train_size: int, batch_size: int, step_range: tuple[int, int] = (MIN_STEPS, MAX_STEPS),
                  epochs: int = EPOCHS_OF_STEPS) -> int:
    """The data-sized default (module docstring): ``epochs``' worth of steps within ``step_range``."""
    low, high = step_range
    return int(min(high, max(low, epochs * steps_per_epoch(train_size, batch_size))))


def with_steps(trainer_config, steps: int, per_epoch: int):
    """``trainer_config`` set to train exactly ``steps`` steps (and the epochs that cover them)."""
    return replace(trainer_config, max_steps=int(steps), epochs=math.ceil(steps / per_epoch))


def measure_step_time(build_module, datamodule, trainer_config) -> float:
    """Median seconds per training step (loading included) over a few real steps on a copy of the run,
    with no checkpoints, logs or validation; the weights trained here are thrown away."""
    import lightning.pytorch as pl

    from omnivis.engine.trainer import resolve_precision

    ends: list[float] = []

    class _Clock(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            ends.append(time.perf_counter())

    trainer = pl.Trainer(
        max_steps=CALIBRATION_STEPS, max_epochs=-1, accelerator=trainer_config.accelerator, devices=1,
        precision=resolve_precision(trainer_config.precision, trainer_config.accelerator), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, use_distributed_sampler=False, callbacks=[_Clock()],
    )
    trainer.fit(build_module(), datamodule=copy.copy(datamodule))
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    if not gaps:
        raise ConfigError("could not time a training step: the training set gives fewer than two batches")
    return statistics.median(gaps)


def steps_for_budget(budget_s: float, step_s: float, budget_text: str) -> int:
    """Whole steps that fit in the budget; a budget shorter than one step is an error."""
    steps = int(budget_s // step_s)
    if steps < 1:
        raise ConfigError(f"time budget {budget_text} is shorter than one training step ({step_s:.2f} s measured "
                          "here); give a longer budget")
    return steps


def _single_device(trainer_config) -> bool:
    return trainer_config.num_nodes == 1 and str(trainer_config.devices) in ("auto", "1") and \
        trainer_config.strategy in ("auto", "single_device")


def fit_schedule(config, build_module, datamodule, step_range: tuple[int, int] = (MIN_STEPS, MAX_STEPS),
                 epochs: int = EPOCHS_OF_STEPS) -> tuple[object, str | None]:
    """``config`` with ``trainer.max_steps``/``epochs`` fixed from the data (``epochs``' worth within
    ``step_range``) or the time budget, and the line that says what was chosen (None when the user
    fixed the length)."""
    t = config.trainer
    if not t.time_budget and t.epochs is not None:
        return config, None
    train_size, batch_size = len(datamodule.train_set), datamodule.batch_size
    per_epoch = steps_per_epoch(train_size, batch_size)
    if t.time_budget:
        if not _single_device(t):
            raise ConfigError("--time-budget measures one device's step time; on several devices or nodes "
                              "give --epochs or --max-steps instead")
        budget = parse_duration(t.time_budget)
        step_s = measure_step_time(build_module, datamodule, t)
        steps = steps_for_budget(budget, step_s, t.time_budget)
        if t.max_steps > 0:
            steps = min(steps, t.max_steps)
        line = (f"schedule: {steps} steps ({steps / per_epoch:.1f} epochs of {train_size} images) fit the "
                f"{t.time_budget} budget at {step_s:.3f} s a step (measured on {CALIBRATION_STEPS} steps)")
    elif t.max_steps > 0:
        steps = t.max_steps
        line = f"schedule: {steps} steps (--max-steps), {steps / per_epoch:.1f} epochs of {train_size} images"
    else:
        steps = default_steps(train_size, batch_size, step_range, epochs)
        line = (f"schedule: {steps} steps = {steps / per_epoch:.1f} epochs of {train_size} images (sized by the "
                f"data: {epochs} epochs' worth within [{step_range[0]}, {step_range[1]}]; --epochs N or "
                "--time-budget 5m to choose)")
    trainer = replace(with_steps(t, steps, per_epoch), time_budget=None)
    return replace(config, trainer=trainer), line


def resolve_patience(config, monitor: str | None, loss_monitor: str | None = None) -> tuple[object, str | None]:
    """``config`` with an automatic ``early_stopping_patience`` (-1) made concrete: off without held-out
    data (``monitor`` None), else a quarter of the epochs, at least 3; and the line that says so
    (a fall of ``loss_monitor`` also counts as progress: ``engine.trainer.LossAwareEarlyStopping``)."""
    t = config.trainer
    if t.early_stopping_patience >= 0:
        return config, None
    patience = 0 if monitor is None else max(MIN_PATIENCE, math.ceil((t.epochs or 1) / PATIENCE_FRACTION))
    resolved = replace(config, trainer=replace(t, early_stopping_patience=patience))
    if not patience:
        return resolved, None
    return resolved, (f"early stopping: after {patience} validations without a better {monitor}"
                      f"{f' or a lower {loss_monitor}' if loss_monitor else ''} (a quarter of the "
                      f"{t.epochs} epochs, at least {MIN_PATIENCE}); the bundle then keeps the best weights "
                      "(--patience 0 to turn off)")
