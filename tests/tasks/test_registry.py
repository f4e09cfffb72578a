"""The task table resolves every entry point, and only imports the task it is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omnivis.errors import BundleError, ConfigError
from omnivis.tasks.registry import TASKS, get_task

BUNDLE_TASKS = [name for name, row in TASKS.items() if row.bundle_task == name and not row.use_instead]


@pytest.mark.parametrize("name", BUNDLE_TASKS)
def test_every_bundle_task_resolves_all_its_entry_points(name):
    row = get_task(name)
    assert isinstance(row.config, type)
    assert all(callable(f) for f in (row.train, row.evaluate, row.predictor))


@pytest.mark.parametrize("name", list(TASKS))
def test_every_row_loads_and_trains_or_evaluates(name):
    row = TASKS[name]
    assert callable(row.train) or callable(row.evaluate)
    if row.train is not None:  # what trains has a config the CLI's options come from
        assert isinstance(row.config, type)


def test_distill_and_probe_are_rows_but_not_bundle_tasks():
    assert TASKS["distill"].bundle_task == "classify" and TASKS["probe"].bundle_task is None
    with pytest.raises(ConfigError, match="unknown task 'distill'"):
        get_task("distill")


def test_a_classifier_does_not_import_the_generation_libraries():
    # (transformers is imported anyway: torchmetrics.functional does when it is installed)
    code = ("import sys; from omnivis.tasks.registry import get_task; get_task('classify').evaluate; "
            "print(sorted(m for m in ('diffusers', 'omnivis.tasks.generate', 'omnivis.tasks.detect', "
            "'omnivis.tasks.segment', 'segmentation_models_pytorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_and_backbone_tasks_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'detect'"):
        get_task("detcet")
    with pytest.raises(BundleError, match="omnivis probe"):
        get_task("pretrain")


@pytest.mark.parametrize("name", ["classify", "detect", "segment", "multitask"])
def test_using_a_bundle_imports_no_training_code(name):
    """Predict, eval's model loading, export and serve must not pay for Lightning (seconds at start-up)."""
    code = (f"import sys; from omnivis.tasks.registry import get_task; row = get_task({name!r}); row.predictor; "
            "row.evaluate; print(sorted(m for m in ('lightning', 'lightning.pytorch', 'omnivis.tasks.run', "
            f"'omnivis.tasks.{name}', 'omnivis.data.datamodule') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sampling_a_generator_imports_no_training_code():
    """``omnivis generate`` and a generator's eval read the bundle with the nets and samplers only."""
    code = ("import sys; from omnivis.tasks.registry import get_task; row = get_task('generate'); row.predictor; "
            "row.evaluate; from omnivis.tasks.generate import GeneratorPredictor; "
            "print(sorted(m for m in ('lightning', 'lightning.pytorch', 'omnivis.tasks.run', 'omnivis.data.datamodule', "
            "'omnivis.tasks.generate.train', 'omnivis.tasks.generate.modules') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
