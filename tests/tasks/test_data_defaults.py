"""Defaults read off the data and schedules sized by the data or a time budget, end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from omnivis.bundle import load_bundle
from omnivis.engine.config import TrainerConfig
from omnivis.errors import ConfigError
from omnivis.inference.classify import ClassifyPredictor
from omnivis.tasks import budget
from omnivis.tasks.classify import ClassifyConfig, train_classifier
from omnivis.tasks.generate import GenerateConfig
from tests.toys import arrow_images, write_arrows


def test_a_run_reads_its_defaults_off_the_data_records_them_and_predicts(tmp_path, capsys):
    # left/right arrows: grey, 24 px, and a mirror swaps the class; 150 steps of batch 16 learn them
    data = write_arrows(tmp_path / "arrows", ("left", "right"), per_class=40)
    config = ClassifyConfig(data=str(data), model="omnivis_resnet_tiny", batch_size=16, val_fraction=0.25,
                            trainer=TrainerConfig(epochs=None, max_steps=40, progress=False))
    out = train_classifier(config, tmp_path / "run")
    printed = capsys.readouterr().err
    assert "channels 1" in printed and "img_size 32" in printed and "horizontal flips off" in printed
    assert "schedule: 40 steps" in printed and "decoded into memory once" in printed

    bundle = load_bundle(out, task="classify")
    header = bundle.config
    assert header["in_chans"] == 1 and header["img_size"] == 32
    assert header["train_config"]["augment"]["hflip"] is False
    assert any(line.startswith("horizontal flips off") for line in header["data_defaults"])
    pixels = np.stack([image for image, _ in arrow_images(("left", "right"), 40)]) / 255.0
    assert header["mean"][0] == pytest.approx(pixels.mean(), abs=0.03)  # from a sample of the training images
    assert header["std"][0] == pytest.approx(pixels.std(), abs=0.03)

    resolved = json.loads((out / "run_config.json").read_text())  # what --resume reads: no re-deciding
    assert resolved["channels"] == 1 and resolved["img_size"] == 32 and resolved["augment"]["hflip"] is False
    assert resolved["trainer"]["max_steps"] == 40 and resolved["trainer"]["epochs"] == 14  # 3 steps an epoch

    fresh = arrow_images(("left", "right"), 10, seed=7)
    predictions = ClassifyPredictor.from_dir(out).predict([image for image, _ in fresh])
    right = sum(p["label"] == ("left", "right")[label] for p, (_, label) in zip(predictions, fresh))
    assert right >= 18  # 90% of new arrows through the reloaded bundle (chance: 50%)


@dataclass
class _Config:
    trainer: TrainerConfig


def _fake_run(train_size: int, epochs=None, max_steps: int = -1, time_budget=None, devices="auto"):
    config = _Config(trainer=TrainerConfig(epochs=epochs, max_steps=max_steps, time_budget=time_budget,
                                                   devices=devices))
    datamodule = SimpleNamespace(train_set=[0] * train_size, batch_size=64)
    return config, datamodule


def test_the_default_schedule_follows_the_dataset_size():
    assert budget.default_steps(1_000, 64) == 400  # 15 steps an epoch: 20 epochs would be 300
    assert budget.default_steps(10_000, 64) == 3000  # 156 an epoch: capped
    assert budget.default_steps(60_000, 64) == 3000  # 3.2 epochs, not 10 (9,370 steps)
    # detection and segmentation: an answer per object or pixel takes more updates (100 epochs' worth)
    dense = (budget.DENSE_STEPS, budget.DENSE_EPOCHS)
    assert budget.default_steps(100, 16, *dense) == 2000  # 6 steps an epoch: 100 epochs would be 600
    assert budget.default_steps(240, 8, *dense) == 3000  # 30 an epoch
    assert budget.default_steps(960, 16, *dense) == 6000  # 60 an epoch
    assert budget.default_steps(10_000, 8, *dense) == 6000  # capped
    config, datamodule = _fake_run(1_000)  # 15 steps an epoch: 1,500, below the floor
    resolved, line = budget.fit_schedule(config, None, datamodule, *dense)
    assert resolved.trainer.max_steps == 2000 and "100 epochs' worth within [2000, 6000]" in line
    config, datamodule = _fake_run(5_000)
    resolved, line = budget.fit_schedule(config, None, datamodule)
    assert resolved.trainer.max_steps == 1560 and resolved.trainer.epochs == 20 and "sized by the data" in line
    config, datamodule = _fake_run(5_000, epochs=3)
    assert budget.fit_schedule(config, None, datamodule) == (config, None)  # the user chose


def test_a_trainer_config_written_for_another_setting_keeps_the_data_sized_length(tmp_path):
    # TrainerConfig(progress=False) used to mean 10 epochs whatever the task's own default said
    config = ClassifyConfig(trainer=TrainerConfig(progress=False))
    datamodule = SimpleNamespace(train_set=[0] * 5_000, batch_size=64)
    resolved, line = budget.fit_schedule(config, None, datamodule)
    assert resolved.trainer.max_steps == 1560 and "sized by the data" in line
    assert GenerateConfig().trainer.epochs == 10  # a task whose default is a number of epochs says so
    from omnivis.engine.trainer import build_trainer

    with pytest.raises(ValueError, match="length is not set"):  # never an endless run
        build_trainer(TrainerConfig(accelerator="cpu", progress=False), tmp_path)


def test_a_time_budget_sets_the_steps_from_the_measured_step_time(monkeypatch):
    monkeypatch.setattr(budget, "measure_step_time", lambda build, dm, t: 0.25)
    config, datamodule = _fake_run(1_000, time_budget="2m")
    resolved, line = budget.fit_schedule(config, None, datamodule)
    assert resolved.trainer.max_steps == 480 and resolved.trainer.epochs == 32  # 120 s / 0.25 s; 15 an epoch
    assert resolved.trainer.time_budget is None and "2m budget" in line  # resume does not measure again
    with pytest.raises(ConfigError, match="shorter than one training step"):
        budget.fit_schedule(*_fake_run(1_000, time_budget="0.1s")[:1], None, datamodule)
    with pytest.raises(ConfigError, match="several devices"):
        budget.fit_schedule(_fake_run(1_000, time_budget="5m", devices="2")[0], None, datamodule)
    assert [budget.parse_duration(t) for t in ("90s", "5m", "1.5h", "12")] == [90, 300, 5400, 12]
    with pytest.raises(ConfigError, match="not a duration"):
        budget.parse_duration("five minutes")


def test_a_budget_shorter_than_a_step_is_a_clear_error_before_anything_is_written(tmp_path):
    data = write_arrows(tmp_path / "arrows", ("up", "down"), per_class=20)
    config = ClassifyConfig(data=str(data), batch_size=8, channels=1, img_size=16,
                            trainer=TrainerConfig(time_budget="0.001s", progress=False))
    with pytest.raises(ConfigError, match="shorter than one training step"):
        train_classifier(config, tmp_path / "run")
    assert not (tmp_path / "run" / "run_config.json").exists()


def test_early_stopping_is_on_with_held_out_data_and_scales_with_the_epochs():
    config = _Config(trainer=TrainerConfig(epochs=40))
    resolved, line = budget.resolve_patience(config, "val/accuracy")
    assert resolved.trainer.early_stopping_patience == 10 and "a quarter of the 40 epochs" in line
    assert budget.resolve_patience(_Config(trainer=TrainerConfig(epochs=5)), "val/miou")[0].trainer.early_stopping_patience == 3
    resolved, line = budget.resolve_patience(config, None)  # nothing held out: nothing to watch
    assert resolved.trainer.early_stopping_patience == 0 and line is None
    chosen = _Config(trainer=TrainerConfig(epochs=40, early_stopping_patience=0))
    assert budget.resolve_patience(chosen, "val/accuracy") == (chosen, None)


def test_a_run_stopped_early_keeps_its_best_weights(tmp_path):
    import torch

    from omnivis.tasks.run import keep_best_if_stopped_early

    module = torch.nn.Linear(3, 2)
    best = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": best, "epoch": 4}, tmp_path / "checkpoints" / "best.ckpt")
    stopper = SimpleNamespace(stopped_epoch=0, monitor="val/accuracy", best_score=torch.tensor(0.75))
    trainer = SimpleNamespace(early_stopping_callback=stopper)
    assert keep_best_if_stopped_early(trainer, module, tmp_path) == {}  # ran to the end: the last weights stay
    assert not torch.equal(module.weight, best["weight"])

    stopper.stopped_epoch = 9
    assert keep_best_if_stopped_early(trainer, module, tmp_path) == {
        "early_stopped_epoch": 9, "best_epoch": 4, "best_val_accuracy": 0.75}
    assert all(torch.equal(module.state_dict()[k], v) for k, v in best.items())
