"""Models that differentially private training can use: batch-norm replaced by group-norm.

Batch-norm makes each image's output depend on the other images of its batch, so a per-image
gradient (what DP-SGD clips) does not exist. Opacus' ``ModuleValidator.fix`` swaps every batch-norm
for a ``GroupNorm(min(32, C), C)``; training and ``ClassifyPredictor`` both call this one function, so
a private bundle's weights always meet the module they were trained in.
"""

from __future__ import annotations

from torch import nn

from omnivis.errors import ConfigError


def dp_compatible(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with batch-norm replaced by group-norm (Opacus' ``ModuleValidator.fix``).

    Raises ConfigError naming the first layer Opacus cannot train privately even after the fix.
    """
    from opacus.validators import ModuleValidator  # only private bundles pay for importing opacus

    fixed = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ConfigError(f"this model cannot be trained with differential privacy: {str(errors[0]).split('.')[0]}; "
                          "choose another --model")
    return fixed
