"""The one ``lightning.Trainer`` every task trains with, built from a ``TrainerConfig``.

Lightning does the heavy lifting (devices, DDP/FSDP, multi-node, precision, checkpoints, loggers,
progress bars). What we add are two small callbacks that make runs reproducible and safe: the
model's RNG reseeded from (seed, step, rank) before every step, and a non-finite loss stopping the
run before it touches the weights. (Resuming the data order at the exact batch a killed run stopped
at is the datamodule's own checkpoint state: ``SeededDataModule.state_dict``.)
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.profilers import PassThroughProfiler

from omnivis.engine.cluster import bounded_join
from omnivis.engine.config import PRECISIONS, TrainerConfig  # noqa: F401  (re-exported)
from omnivis.errors import TrainingError
from omnivis.fileio import atomic_write_bytes
from omnivis.seeding import mix_seed, reseed_torch, seed_everything


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> bf16-mixed where a CUDA GPU supports it, else full precision."""
    if precision != "auto":
        return precision
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class StepSeed(Callback):
    """Reseed the model's RNG from (seed, global step, rank) before every training step.

    Dropout, drop-path, masking and batch mixing then depend only on the step, so a resumed run
    matches an uninterrupted one bit for bit on CPU (reseeding per epoch is not enough).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        step_seed = mix_seed(self.seed, trainer.global_step, trainer.global_rank)
        reseed_torch(step_seed)
        random.seed(step_seed)


class StopOnNonFiniteLoss(Callback):
    """Stop before a NaN/inf loss reaches the weights, naming the step; the last checkpoint stays good."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        # one .item() (which syncs a GPU, as the bool of a tensor check would): ~12 us between CPU
        # steps, where torch.isfinite(loss).all() took ~65 us
        value = loss.detach().item()
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); lower the learning rate or check the data. "
                f"weights were not updated with it; --resume continues from the newest checkpoint in "
                f"{checkpoint_dir(trainer.default_root_dir)}"
            )


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, replaced every ``every_n_train_steps`` steps and at epoch ends.

    Epoch ends are throttled by ``min_interval_s``: the first one of a process and the final one
    always write; another writes when the next epoch end would fall ``min_interval_s`` or more
    after the previous write (an epoch is assumed to take as long as the one that just ended). A
    killed run so loses at most ``min_interval_s`` or one epoch, whichever is longer.
    """

    def __init__(self, dirpath: Path, every_n_train_steps: int | None, min_interval_s: float) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                         every_n_train_steps=every_n_train_steps, save_on_train_epoch_end=True,
                         enable_version_counter=False)
        self.min_interval_s = min_interval_s
        self._saved_at: float | None = None  # no last.ckpt written by this process yet
        self._epoch_started_at = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started_at = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args, **kwargs) -> None:
        # the parent only saves here every N steps (no time interval is set): skip its checks otherwise
        if self._every_n_train_steps:
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        final = (trainer.should_stop or 0 <= trainer.max_epochs <= trainer.current_epoch + 1
                 or 0 <= trainer.max_steps <= trainer.global_step)
        now = time.monotonic()
        next_end = now + (now - self._epoch_started_at)
        if final or self._saved_at is None or next_end - self._saved_at >= self.min_interval_s:
            super().on_train_epoch_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._saved_at = time.monotonic()


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt``: the best validation score so far and, on a tie, the later weights. A small
    held-out set saturates: 252 held-out digits reach accuracy 1.0 at epoch 12 of 20 and stay there
    while the validation loss still falls (0.137 -> 0.117); Lightning's strict comparison kept the
    first epoch at 1.0, the least trained of the equals. Early stopping still needs a strict gain."""

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k != 1 or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        at_least_as_good = torch.le if self.mode == "min" else torch.ge
        decision = at_least_as_good(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(decision))


class LossAwareEarlyStopping(EarlyStopping):
    """Early stopping where a lower held-out loss (``loss_monitor``) also counts as progress: the run
    stops after ``patience`` validations in which neither the score nor the loss got better.

    A small held-out set scores in coarse steps: 252 held-out digits move accuracy by 0.4% per
    image, so one image flipping back and forth reads as a stall while the loss still falls (0.160 ->
    0.125 over the last nine validations of one such run, which Lightning's rule on accuracy alone
    ended at 270 of 400 steps). Stopping on the loss alone is no better: it can end a run whose
    loss is flat while its accuracy still climbs. ``best.ckpt`` still follows the score alone."""

    def __init__(self, *args, loss_monitor: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_monitor = loss_monitor
        self.best_loss = torch.tensor(torch.inf)
        self._loss: torch.Tensor | None = None

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        loss = trainer.callback_metrics.get(self.loss_monitor) if self.loss_monitor else None
        self._loss = None if loss is None else loss.detach().squeeze().cpu()
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        loss_fell = self._loss is not None and bool(torch.isfinite(self._loss)) and bool(self._loss < self.best_loss)
        if loss_fell:
            self.best_loss = self._loss
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if loss_fell and should_stop and self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            should_stop, reason, self.stopping_reason = False, None, EarlyStoppingReason.NOT_STOPPED
        if loss_fell:
            self.wait_count = 0
        return should_stop, reason

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best_loss": self.best_loss}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.best_loss = state_dict.get("best_loss", torch.tensor(torch.inf))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, moved into place with ``os.replace`` from a sibling file.

    Lightning's own "atomic" save writes to a file in the system temp folder and moves it over;
    across file systems (``/tmp`` on tmpfs, runs on a data disk) that move is a copy, and a kill
    during it leaves a truncated ``last.ckpt`` where a good one stood.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


class NoProfiler(PassThroughProfiler):
    """Lightning's "no profiler", without its per-call cost.

    Lightning wraps every hook of every callback in ``profiler.profile(name)``, ~50 calls a step; the
    default ``PassThroughProfiler`` builds a generator-based context manager for each (~0.7 us hot,
    ~55 us a step between CPU steps, where caches are cold). This hands back one shared no-op.
    """

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NOTHING


class CheckpointOnException(Callback):
    """Write ``last.ckpt`` when training dies (Ctrl-C, a crash) so no finished step is lost.

    Lightning's ``OnExceptionCheckpoint`` deletes its file when a run ends normally, which would
    take ``last.ckpt`` with it; this one only ever writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # a non-finite loss may already have poisoned buffers (batch-norm statistics): keep the last good one
        if isinstance(exception, TrainingError):
            return
        if trainer.state.fn == "fit" and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
        ckpt_path: Path | None, resume_command: str) -> None:
    """``trainer.fit`` (resuming from ``ckpt_path``, loaded with ``weights_only``), with Ctrl-C
    reported as one line saying how to continue (Lightning turns it into ``exit(1)`` after
    ``CheckpointOnException`` has written ``last.ckpt``). A run of several processes waits a bounded
    time for the master and for the process group to form (``engine/cluster.py``)."""
    try:
        with bounded_join(trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if trainer.interrupted:
            raise TrainingError(
                f"interrupted at step {trainer.global_step}; continue with: {resume_command}"
            ) from None
        raise
    leave_process_group()


def leave_process_group() -> None:
    """End this process's part in a DDP run once training is done.

    Only rank 0 goes on, to evaluate and save; torchmetrics metrics sync whenever a process group
    exists, so rank 0's evaluation would wait at a barrier for ranks that have already exited.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues from: the newest full one in ``run_dir/checkpoints``.

    Newest by the global step stored in each file (``best.ckpt`` may be newer than a throttled
    ``last.ckpt``, or the only one a killed run left); at equal steps ``last.ckpt`` (both are then
    written at the same epoch end and hold the same state), then the later file. A file that cannot
    be read, or that lacks the optimizer and loop state a resume needs, is skipped with a warning
    naming it. None when no checkpoint can be resumed from.
    """
    candidates = []
    for path in sorted(checkpoint_dir(run_dir).glob("*.ckpt")):
        step = _resumable_step(path)
        if step is not None:
            candidates.append(((step, path.name == "last.ckpt", path.stat().st_mtime_ns), path))
    return max(candidates)[1] if candidates else None


_RESUME_KEYS = ("global_step", "state_dict", "optimizer_states", "loops")


def _resumable_step(path: Path) -> int | None:
    """The global step of checkpoint ``path``, or None (with a warning) when it cannot be resumed from.

    ``mmap`` keeps this cheap for large checkpoints: only the pickled structure is read, tensor
    storage stays on disk. A truncated file fails here already (its zip directory is at the end).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is skipped the same way
        # the first sentence: torch adds a paragraph of guesses to a truncated file's error
        reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"{path}: skipped, not a readable checkpoint ({reason})", UserWarning, stacklevel=3)
        return None
    missing = [key for key in _RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        warnings.warn(f"{path}: skipped, not a full training checkpoint (no {', '.join(missing)})",
                      UserWarning, stacklevel=3)
        return None
    return int(checkpoint["global_step"])


DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def ddp_strategy_for_partial_graphs(config: TrainerConfig) -> str:
    """``config.strategy``, with DDP's search for unused parameters switched on (it costs a graph
    walk per step, so only tasks that need it ask). ``auto`` becomes DDP where Lightning would pick
    it: more than one device or node."""
    strategy = config.strategy
    if strategy == "auto":
        devices = str(config.devices)
        many = int(devices) > 1 if devices.lstrip("-").isdigit() else (
            config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1)
        strategy = "ddp" if many or config.num_nodes > 1 else "auto"
    return f"{strategy}_find_unused_parameters_true" if strategy in DDP_STRATEGIES else strategy


def build_trainer(
    config: TrainerConfig,
    run_dir: str | Path,
    *,
    monitor: str | None = None,
    monitor_mode: str = "min",
    loss_monitor: str | None = None,
    extra_callbacks: list[Callback] | None = None,
    partial_graph: bool = False,
) -> pl.Trainer:
    """A Lightning Trainer for ``config`` writing logs and checkpoints under ``run_dir``.

    Args:
        monitor: the validation metric that picks ``best.ckpt`` and drives early stopping
            (None when the task has no validation data).
        monitor_mode: ``min`` or ``max``.
        loss_monitor: a held-out loss whose fall also counts as progress for early stopping
            (``LossAwareEarlyStopping``); None: the monitored score alone.
        partial_graph: some parameters may get no gradient in a step (a multi-task head whose
            labels a batch lacks); DDP then has to look for unused parameters, or it stops the run.

    The run's length must be set: ``epochs`` or ``max_steps`` (``tasks.budget.fit_schedule`` turns
    ``epochs=None`` into steps sized by the data before a task's trainer is built).
    """
    if config.epochs is None and config.max_steps < 1:
        raise ValueError("build_trainer: the run's length is not set; give epochs or max_steps "
                         "(tasks size epochs=None by the data with tasks.budget.fit_schedule first)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    ckpt_dir = checkpoint_dir(run_dir)
    callbacks: list[Callback] = [StepSeed(config.seed), StopOnNonFiniteLoss()]
    callbacks.append(LastCheckpoint(ckpt_dir, config.checkpoint_every_n_steps or None, config.checkpoint_min_interval_s))
    # a crash or Ctrl-C also writes last.ckpt, so --resume continues from the very step it stopped at
    callbacks.append(CheckpointOnException(ckpt_dir / "last.ckpt"))
    if monitor:
        callbacks.append(
            BestCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=monitor_mode, save_top_k=1, enable_version_counter=False)
        )
        if config.early_stopping_patience:
            # strict=False: a run whose --max-steps ends before its first validation has nothing to watch
            callbacks.append(LossAwareEarlyStopping(monitor=monitor, mode=monitor_mode, patience=config.early_stopping_patience,
                                                   strict=False, loss_monitor=loss_monitor))
    callbacks.append(LearningRateMonitor(logging_interval="step"))
    if config.progress:
        callbacks.append(RichProgressBar(leave=True))
    callbacks.extend(extra_callbacks or [])
    devices: int | str = "auto" if str(config.devices) == "auto" else int(config.devices)
    loggers = [CSVLogger(save_dir=run_dir, name="logs", version="")]
    try:
        loggers.append(TensorBoardLogger(save_dir=run_dir, name="logs", version="", default_hp_metric=False))
    except ModuleNotFoundError:  # tensorboard is a dependency, but a trimmed install still trains
        pass
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        trainer = pl.Trainer(
            default_root_dir=run_dir,
            max_epochs=config.epochs if config.epochs is not None and config.epochs > 0 else -1,
            max_steps=config.max_steps,
            accelerator=config.accelerator,
            devices=devices,
            strategy=ddp_strategy_for_partial_graphs(config) if partial_graph else config.strategy,
            num_nodes=config.num_nodes,
            precision=resolve_precision(config.precision, config.accelerator),
            deterministic=config.deterministic,
            callbacks=callbacks,
            logger=loggers,
            log_every_n_steps=config.log_every_n_steps,
            enable_progress_bar=config.progress,
            enable_model_summary=False,
            use_distributed_sampler=False,  # EpochSampler shards by rank itself
            num_sanity_val_steps=0,
            profiler=NoProfiler(),
            plugins=[AtomicCheckpointIO()],
        )
    return trainer
