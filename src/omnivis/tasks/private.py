"""Differentially private training (DP-SGD through Opacus) for a task's LightningModule.

What DP-SGD needs, and where it lives:

- a model whose per-image gradients exist: batch-norm swapped for group-norm when the model is
  built (``models/private.py``), recorded in the bundle so the predictor builds the same module;
- Poisson-sampled batches (``data/poisson.py``): each image in each step with probability
  ``q = batch_size / N``, drawn from (seed, epoch, step) so a resumed run sees the same batches;
- per-image gradients (Opacus' ``GradSampleModuleExpandedWeights``: torch's expanded weights,
  which, unlike Opacus' backward hooks, allow timm's in-place residual adds), clipped to
  ``max_grad_norm``, summed, noised and averaged by ``DPOptimizer``; the noise is drawn from torch's
  RNG, which ``StepSeed`` reseeds from (seed, step) before every step;
- the noise multiplier that makes the whole schedule (steps at rate ``q``) spend the target epsilon
  at the given delta (``opacus.accountants.utils.get_noise_multiplier``, RDP accountant), and an
  accountant charged at every optimizer step, saved in every checkpoint so a resumed run keeps
  the history of the steps it did not take again.

Not secure against an attacker who reads the seed (Opacus' ``secure_mode`` is off): the guarantee
is against what the trained weights reveal.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.errors import ConfigError

ACCOUNTANT = "rdp"
DEFAULT_DELTA = 1e-5
CHECKPOINT_KEY = "dp_accountant"


def resolve_delta(config, train_size: int) -> tuple[object, str | None]:
    """``config`` with ``dp_delta`` set (None: 1e-5, or 1/(10 N) for more than 10,000 images) and the
    line that says so; a delta of 1/N or more is an error (it would allow publishing an image)."""
    delta = config.dp_delta
    line = None
    if delta is None:
        delta = min(DEFAULT_DELTA, 1.0 / (10 * train_size))
        line = f"privacy delta {delta:.3g}: below 1/N for {train_size} training images (--dp-delta to choose)"
    if not 0.0 < delta < 1.0 / train_size:
        raise ConfigError(f"--dp-delta {delta:g} must be > 0 and below 1/N = {1.0 / train_size:.3g} for {train_size} "
                          "training images (a delta of 1/N lets the model reveal an image outright); "
                          f"choose e.g. --dp-delta {min(DEFAULT_DELTA, 1.0 / (10 * train_size)):.3g}")
    return replace(config, dp_delta=delta), line


def planned_steps(trainer_config, per_epoch: int) -> int:
    """The optimizer steps a fixed schedule takes: ``max_steps`` or the epochs', whichever ends first."""
    steps = [trainer_config.max_steps] if trainer_config.max_steps > 0 else []
    if trainer_config.epochs:
        steps.append(trainer_config.epochs * per_epoch)
    return min(steps)


@functools.lru_cache(maxsize=16)
def noise_multiplier(epsilon: float, delta: float, batch_size: int, train_size: int, steps: int) -> float:
    """The noise multiplier with which ``steps`` Poisson steps of rate ``batch_size / train_size``
    spend ``epsilon`` at ``delta`` (RDP); ConfigError when no sensible amount of noise reaches it."""
    from opacus.accountants.utils import get_noise_multiplier

    rate = min(1.0, batch_size / train_size)
    sigma = math.inf
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
        try:
            sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=rate, steps=steps,
                                         accountant=ACCOUNTANT)
        except ValueError:  # "The privacy budget is too low": past Opacus' largest noise (below ~0.2 at
            # delta 1e-5 no noise gets there: RDP's largest order bounds epsilon by log(1/delta) / 62)
            pass
    if sigma > batch_size / 2:
        epochs = steps * batch_size / train_size
        where = (f"--dp-epsilon {epsilon:g} cannot be reached in {steps} steps ({epochs:.2g} epochs) of batch "
                 f"{batch_size} from {train_size} images at delta {delta:.3g}")
        if math.isinf(sigma):
            raise ConfigError(f"{where}: no amount of noise gets there under Opacus' RDP accountant (at delta 1e-5 "
                              "nothing below about 0.19 does); raise --dp-epsilon or --dp-delta")
        raise ConfigError(f"{where}: it needs noise multiplier {sigma:.1f}, over half the batch size, and the noise "
                          "would drown the gradients; raise --dp-epsilon, train fewer --epochs (or --max-steps), or "
                          "raise --batch-size")
    return float(sigma)


def check_budget(config, train_size: int) -> list[str]:
    """Once the schedule is fixed (before any file is written): the noise the target epsilon needs,
    as a line to print; ConfigError when it cannot be reached."""
    batch = min(config.batch_size, train_size)
    steps = planned_steps(config.trainer, max(1, train_size // batch))
    sigma = noise_multiplier(config.dp_epsilon, config.dp_delta, batch, train_size, steps)
    return [f"privacy: epsilon {config.dp_epsilon:g} at delta {config.dp_delta:.3g} over {steps} steps sampling "
            f"{batch / train_size:.4f} of the images each: noise multiplier {sigma:.3f}, per-image gradients clipped "
            f"to {config.dp_max_grad_norm:g} (batch-norm becomes group-norm; Poisson-sampled batches)"]


class PrivateTraining:
    """The DP-SGD side of one training run: per-image gradients, the DP optimizer and the accountant.

    A plain object (not an ``nn.Module``) held by the LightningModule, so the model's weights are
    registered once, under the module's own ``model``.

    Args:
        model: the (``dp_compatible``) model; its forward for training goes through ``loss``.
        epsilon, delta: the privacy target.
        max_grad_norm: the L2 norm each image's gradient is clipped to.
        batch_size: the expected batch size (``PoissonBatches``' rate times the training-set size).
        train_size: training images.
    """

    def __init__(self, model: nn.Module, *, epsilon: float, delta: float, max_grad_norm: float, batch_size: int,
                 train_size: int) -> None:
        from opacus.accountants import RDPAccountant
        from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights

        self.per_image = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
        self.accountant = RDPAccountant()
        self.epsilon, self.delta, self.max_grad_norm = epsilon, delta, max_grad_norm
        self.batch_size = min(batch_size, train_size)
        self.train_size = train_size
        self.sample_rate = self.batch_size / train_size
        self.sigma: float | None = None
        self.planned_steps: int | None = None

    def loss(self, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy with per-image gradients recorded. An empty Poisson draw still takes its
        noisy step (skipping it would reveal the draw): one all-zero image with weight 0 makes every
        per-image gradient 0, so the step adds the noise alone."""
        # expanded weights refuse to run over the previous step's per-image gradients, and Lightning's
        # zero_grad comes between this forward and the backward: clear them here (that step is done)
        for param in self.per_image.parameters():
            param.grad_sample = None
        if len(images) == 0:
            return self.per_image(images.new_zeros((1, *images.shape[1:]))).sum() * 0.0
        return F.cross_entropy(self.per_image(images), labels, label_smoothing=label_smoothing)

    def wrap(self, optimizers: dict, total_steps: int, world_size: int) -> dict:
        """``configure_optimizers``' dict with the optimizer wrapped in Opacus' ``DPOptimizer``
        (noise calibrated to ``total_steps``) and the scheduler moved onto it."""
        from opacus.optimizers import DPOptimizer

        if world_size > 1:
            raise ConfigError("--dp-epsilon trains on one device (the accounting assumes one Poisson draw per step); "
                              "pass --devices 1")
        self.planned_steps = int(total_steps)
        self.sigma = noise_multiplier(self.epsilon, self.delta, self.batch_size, self.train_size, self.planned_steps)
        optimizer = DPOptimizer(optimizers["optimizer"], noise_multiplier=self.sigma, max_grad_norm=self.max_grad_norm,
                                expected_batch_size=self.batch_size, loss_reduction="mean")
        optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        schedule = dict(optimizers["lr_scheduler"])
        # Lightning wants the scheduler on the optimizer it is handed; the factors stay the same
        schedule["scheduler"] = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule["scheduler"].lr_lambdas)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def steps(self) -> int:
        """Optimizer steps the accountant has been charged for."""
        return sum(int(n) for _, _, n in self.accountant.history)

    def spent(self) -> float:
        """The epsilon spent so far at ``delta`` (0 before the first step)."""
        if not self.accountant.history:
            return 0.0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
            return float(self.accountant.get_epsilon(delta=self.delta))

    def record(self) -> dict:
        """What the bundle keeps: the target, the spent epsilon and how it was spent."""
        return {"epsilon": round(self.spent(), 4), "target_epsilon": self.epsilon, "delta": self.delta,
                "noise_multiplier": self.sigma, "sample_rate": self.sample_rate, "steps": self.steps(),
                "max_grad_norm": self.max_grad_norm, "accountant": ACCOUNTANT, "poisson_sampling": True}

    def state_dict(self) -> dict:
        """The accountant's history as plain lists (checkpoints load with ``weights_only``)."""
        return {"history": [[float(s), float(q), int(n)] for s, q, n in self.accountant.history]}

    def load_state_dict(self, state: dict | None, global_step: int, where: str = "the checkpoint") -> None:
        """Restore the history; a checkpoint without it, or whose steps disagree, is refused: resuming
        would under-report the epsilon spent."""
        if state is None:
            raise ConfigError(f"{where} holds no privacy accountant, so the epsilon its steps spent is unknown; "
                              "start a new run instead of --resume")
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        if self.steps() != global_step:
            raise ConfigError(f"{where}: the privacy accountant counted {self.steps()} steps but the run is at step "
                              f"{global_step}; start a new run instead of --resume")
