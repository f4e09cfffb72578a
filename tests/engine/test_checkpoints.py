"""Epoch-end ``last.ckpt``: throttled by ``checkpoint_min_interval_s``, always written after the first and
the final epoch; ``--resume`` continues from the newest full checkpoint, whichever file holds it."""

from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from omnivis.engine.trainer import (
    AtomicCheckpointIO,
    BestCheckpoint,
    CheckpointOnException,
    LastCheckpoint,
    LossAwareEarlyStopping,
    TrainerConfig,
    build_trainer,
    last_checkpoint,
)
from omnivis.errors import ConfigError
from omnivis.tasks.classify import train_classifier
from tests.conftest import tiny_classify_config


@pytest.mark.parametrize("interval,expected_saves", [(0.0, 3), (3600.0, 2)])
def test_epoch_end_checkpoints_respect_the_minimum_interval(tmp_path, monkeypatch, interval, expected_saves):
    saved_steps = []
    original = LastCheckpoint._save_checkpoint

    def counting(self, trainer, filepath):
        saved_steps.append(trainer.global_step)
        original(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", counting)
    # 10% of digits for training: 6 batches per epoch, 3 short epochs
    config = tiny_classify_config(val_fraction=0.9, trainer=dict(epochs=3, checkpoint_min_interval_s=interval))
    out = train_classifier(config, tmp_path / "run")
    assert len(saved_steps) == expected_saves
    assert saved_steps[0] == 5  # the first epoch end always writes: a killed run has something to resume
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == saved_steps[-1] and final["epoch"] == 2  # the last epoch is always kept


@pytest.mark.parametrize("mode, best, tie, worse, better", [("max", 1.0, 1.0, 0.99, None), ("min", 0.5, 0.5, 0.6, 0.4)])
def test_best_checkpoint_takes_the_later_weights_on_a_tie(tmp_path, mode, best, tie, worse, better):
    """A saturated held-out score (accuracy 1.0 for the rest of the run) keeps the latest weights."""
    class _Strategy:
        def reduce_boolean_decision(self, decision: bool) -> bool:
            return decision

    trainer = type("Trainer", (), {"strategy": _Strategy()})()
    checkpoint = BestCheckpoint(dirpath=tmp_path, filename="best", monitor="val/x", mode=mode, save_top_k=1)
    assert checkpoint.check_monitor_top_k(trainer, torch.tensor(worse))  # nothing saved yet
    checkpoint.best_k_models, checkpoint.kth_best_model_path = {"best.ckpt": torch.tensor(best)}, "best.ckpt"
    assert checkpoint.check_monitor_top_k(trainer, torch.tensor(tie))
    assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(worse))
    if better is not None:
        assert checkpoint.check_monitor_top_k(trainer, torch.tensor(better))
    assert not checkpoint.check_monitor_top_k(trainer, None)


def _stops_at(history: list[tuple[float, float]], loss_monitor: str | None, patience: int = 2) -> int | None:
    """The validation (1-based) at which early stopping ends a run that logs ``history``, or None."""
    class _Strategy:
        def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
            return decision

    stopper = LossAwareEarlyStopping(monitor="val/accuracy", mode="max", patience=patience, loss_monitor=loss_monitor)
    trainer = type("Trainer", (), {"strategy": _Strategy(), "fast_dev_run": False, "should_stop": False,
                                   "current_epoch": 0, "world_size": 1, "global_rank": 0})()
    for validation, (accuracy, loss) in enumerate(history, start=1):
        trainer.callback_metrics = {"val/accuracy": torch.tensor(accuracy), "val/loss": torch.tensor(loss)}
        stopper._run_early_stopping_check(trainer)
        if trainer.should_stop:
            return validation
        stopper.load_state_dict(stopper.state_dict())  # a resume between validations changes nothing
    return None


def test_early_stopping_counts_a_falling_held_out_loss_as_progress():
    # accuracy stalls after the 2nd validation (one image flipping), the loss keeps falling until the 5th
    history = [(0.90, 0.50), (0.99, 0.30), (0.98, 0.25), (0.99, 0.20), (0.98, 0.15), (0.98, 0.16), (0.99, 0.17),
               (0.98, 0.18)]
    assert _stops_at(history, loss_monitor=None) == 4  # Lightning's rule: the score alone
    assert _stops_at(history, loss_monitor="val/loss") == 7  # two validations after the loss last fell
    assert _stops_at([(0.5 + 0.01 * i, 1.0) for i in range(8)], loss_monitor="val/loss") is None  # score rising
    assert _stops_at([(0.5, 1.0)] * 8, loss_monitor="val/loss") == 3  # neither moves


def test_negative_interval_is_a_config_error():
    with pytest.raises(ConfigError, match="checkpoint_min_interval_s"):
        TrainerConfig(checkpoint_min_interval_s=-1)


def _fake_checkpoint(path, step: int, **drop) -> None:
    state = {"global_step": step, "state_dict": {"w": torch.full((2,), float(step))},
             "optimizer_states": [], "loops": {}}
    for key in drop:
        del state[key]
    torch.save(state, path)


def test_resume_picks_the_newest_full_checkpoint_by_step(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    assert last_checkpoint(tmp_path) is None
    _fake_checkpoint(ckpts / "last.ckpt", 5)
    _fake_checkpoint(ckpts / "best.ckpt", 10)  # a throttled last.ckpt can be older than best.ckpt
    assert last_checkpoint(tmp_path) == ckpts / "best.ckpt"
    _fake_checkpoint(ckpts / "last.ckpt", 10)  # same step (the same epoch end): the name users expect
    assert last_checkpoint(tmp_path) == ckpts / "last.ckpt"
    _fake_checkpoint(ckpts / "step-12.ckpt", 12)
    assert last_checkpoint(tmp_path) == ckpts / "step-12.ckpt"


def test_resume_skips_truncated_and_weights_only_checkpoints_naming_them(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _fake_checkpoint(ckpts / "best.ckpt", 5)
    _fake_checkpoint(ckpts / "last.ckpt", 20)
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # a copy cut off by a kill
    _fake_checkpoint(ckpts / "weights.ckpt", 30, optimizer_states=None, loops=None)
    with pytest.warns(UserWarning) as caught:
        assert last_checkpoint(tmp_path) == ckpts / "best.ckpt"
    assert sorted(str(w.message) for w in caught) == [
        (f"{ckpts / 'last.ckpt'}: skipped, not a readable checkpoint "
         "(PytorchStreamReader failed reading zip archive: failed finding central directory)"),
        f"{ckpts / 'weights.ckpt'}: skipped, not a full training checkpoint (no optimizer_states, loops)",
    ]
    (ckpts / "best.ckpt").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        assert last_checkpoint(tmp_path) is None
    assert len(caught) == 3 and any(f"{ckpts / 'best.ckpt'}: skipped" in str(w.message) for w in caught)


def test_checkpoints_are_moved_into_place_from_a_sibling_file(tmp_path, monkeypatch):
    # Lightning's own save moves a file from the system temp folder: a copy, not atomic, across disks
    trainer = build_trainer(TrainerConfig(accelerator="cpu", epochs=1, progress=False), tmp_path)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    target = tmp_path / "checkpoints" / "last.ckpt"
    moves, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append((src, dst)), replace(src, dst))[1])
    trainer.strategy.checkpoint_io.save_checkpoint({"global_step": 3}, target)
    assert len(moves) == 1 and os.path.dirname(moves[0][0]) == str(target.parent) and moves[0][1] == target
    assert torch.load(target, weights_only=True) == {"global_step": 3}
    assert os.listdir(target.parent) == ["last.ckpt"]  # no temporary file left behind


class _Kill(Callback):
    """Dies after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("killed")


def test_a_run_killed_before_its_first_last_ckpt_resumes_from_best_and_matches(tmp_path, monkeypatch):
    # 10% of digits for training: 5 steps per epoch, 3 epochs. The run is killed at step 7 as
    # SIGKILL would (no exception handler writes a checkpoint) and last.ckpt is gone, as before
    # last.ckpt was written at the first epoch end: best.ckpt (step 5) is all there is. The resumed
    # run must still end with weights bit-equal to an uninterrupted one.
    trainer = dict(epochs=3)
    straight = train_classifier(tiny_classify_config(val_fraction=0.9, trainer=trainer), tmp_path / "straight")
    run = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(CheckpointOnException, "on_exception", lambda *args: None)
        with pytest.raises(RuntimeError, match="killed"):
            train_classifier(tiny_classify_config(val_fraction=0.9, trainer=trainer), run, callbacks=[_Kill(7)])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    (run / "checkpoints" / "last.ckpt").unlink()
    assert last_checkpoint(run) == run / "checkpoints" / "best.ckpt"
    resumed = train_classifier(tiny_classify_config(val_fraction=0.9, trainer=trainer), run, resume=True)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 15 and final["epoch"] == 2
