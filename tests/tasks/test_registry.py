"""The task table resolves every entry point, and only imports the task it is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omnivis.errors import BundleError, ConfigError
from omnivis.tasks.registry import TASKS, get_task


@pytest.mark.parametrize("name", list(TASKS))
def test_every_entry_point_resolves(name):
    spec = get_task(name)
    assert isinstance(spec.config, type)
    assert all(callable(f) for f in (spec.train, spec.evaluate, spec.predictor))


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
