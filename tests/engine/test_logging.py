"""Training values reach the loggers every ``log_every_n_steps`` steps, though ``log_training``
calls Lightning's (slow) ``self.log`` only on those steps."""

from __future__ import annotations

import csv

from omnivis.tasks.classify import ClassifyModule, train_classifier
from tests.conftest import tiny_classify_config


def test_train_loss_is_logged_on_every_logger_step_and_only_then(tmp_path, monkeypatch):
    calls = []
    original = ClassifyModule.log

    def counting(self, name, value, *args, **kwargs):
        if name == "train/loss":
            calls.append(self.global_step)
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(ClassifyModule, "log", counting)
    # 10% of digits for training: 5 batches per epoch, 3 epochs = 15 steps, a log every 4
    config = tiny_classify_config(val_fraction=0.9, trainer=dict(epochs=3, log_every_n_steps=4))
    out = train_classifier(config, tmp_path / "run")
    assert calls == [3, 7, 11]  # the steps whose values Lightning writes: (step + 1) % 4 == 0
    with open(out / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == calls and all(float(r["train/loss"]) > 0 for r in rows)
