"""``TrainerConfig``: how any task is trained, importable without Lightning or torch.

Every task config nests it, and ``omnivis ... --help`` or a predictor reading a run's config
should not pay for importing the engine; ``engine/trainer.py`` turns it into a Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnivis.errors import ConfigError

PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true")


@dataclass(kw_only=True)
class TrainerConfig:
    """How a task is trained: length, hardware, precision, checkpoints and logs.

    ``epochs`` defaults to None (sized by the data) here as in the tasks, so a ``TrainerConfig(...)``
    written in Python to change something else never fixes the length by accident; a task whose own
    default is a number of epochs (generate 10, multi-task 12, pretrain 20) says so in its config.

    Attributes:
        epochs: number of passes over the training data (None: sized by the data, see
            ``tasks/budget.py``: 20 epochs' worth of steps within [400, 3000]; detection and
            segmentation 100 epochs' worth within [2000, 6000]; image editing within [400, 1500]).
        max_steps: stop after this many optimizer steps (-1: no limit).
        time_budget: train for as many steps as fit in this long (``90s``, ``5m``, ``1.5h``),
            measured on a few real steps first; the schedule follows (one device only).
        accelerator: ``auto`` (GPU when there is one), ``cpu``, ``gpu``/``cuda``, ``mps``.
        devices: ``auto`` or a number of devices per node.
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``fsdp``, ...
        num_nodes: machines taking part (launch one process per node with the usual env vars).
        precision: ``auto`` is bf16-mixed on a GPU that supports it, else 32-true.
        seed: seeds data order, augmentation and the model's RNG.
        deterministic: use only deterministic kernels (slower on GPU).
        checkpoint_every_n_steps: also write ``last.ckpt`` every N steps (0: at epoch ends only;
            a crash or Ctrl-C writes it too).
        checkpoint_min_interval_s: skip an epoch-end ``last.ckpt`` when the next epoch end still
            falls within this many seconds of the previous one (0: every epoch). The first and the
            final epoch, every ``checkpoint_every_n_steps`` step and a crash still write it; a
            killed run loses at most this long or one epoch, whichever is longer. Epochs of a
            second (digits) otherwise spend 3-5% of their time writing checkpoints.
        early_stopping_patience: stop after this many validations without improvement and keep
            the best weights (-1: a quarter of the epochs, at least 3, when the run has held-out
            data; 0: off).
        log_every_n_steps: how often training metrics are logged.
        progress: show a progress bar.
        num_workers: data-loading worker processes (-1: chosen from the data's size, whether it
            is all decoded in memory, and the cores; 0: load in the training process).
        cache_mb: decode the training and held-out images once into memory when they fit in this
            many MB of uint8 pixels, both together, training images first (images beyond it are
            decoded each epoch; 0: off). Every task but multitask, which decodes every epoch.
    """

    epochs: int | None = None
    max_steps: int = -1
    time_budget: str | None = None
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    seed: int = 0
    deterministic: bool = False
    checkpoint_every_n_steps: int = 0
    checkpoint_min_interval_s: float = 30.0
    early_stopping_patience: int = -1
    log_every_n_steps: int = 10
    progress: bool = True
    num_workers: int = -1
    cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1 and self.max_steps < 1 and not self.time_budget:
            raise ConfigError("set epochs >= 1, max_steps >= 1 or a time_budget")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.checkpoint_min_interval_s < 0:
            raise ConfigError(f"checkpoint_min_interval_s must be >= 0, got {self.checkpoint_min_interval_s}")
        if self.num_workers < -1 or self.num_nodes < 1 or self.cache_mb < 0:
            raise ConfigError("num_workers must be >= -1 (-1: auto), num_nodes >= 1 and cache_mb >= 0")
        devices = str(self.devices)
        if devices != "auto" and not devices.lstrip("-").isdigit():
            raise ConfigError(f"devices must be 'auto' or a number, got '{self.devices}'")
