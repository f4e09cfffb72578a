"""What every pretraining method offers the LightningModule: a loss on a batch of views.

A method is a plain ``nn.Module`` (no Lightning) that owns the backbone being pretrained under the
attribute ``backbone`` (so its weights save as ``backbone.model.*``, the keys every task's
``--init-from`` reads) and its extra parts (heads, teacher, decoder) under other names.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from omnivis.models.backbones import Backbone


class PretrainMethod(nn.Module, metaclass=abc.ABCMeta):
    """Base class: a backbone plus whatever a method needs to compute its loss.

    Attributes:
        backbone: the backbone that the bundle exports.
    """

    backbone: Backbone

    @abc.abstractmethod
    def training_loss(self, views: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss on one batch of views (as the method's view transform collates) and extra
        numbers to log (name -> value)."""

    def after_backward(self, epoch: int) -> None:
        """Hook after gradients exist, before the optimizer step (gradient surgery)."""

    def after_step(self, progress: float) -> None:
        """Hook after each optimizer step; ``progress`` in [0, 1] is the fraction of training done."""

    def parameters_to_train(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (a momentum teacher's are left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights for the bundle: ``backbone.model.*`` first, then the other parts, each tensor once.

        A module may reach the backbone's weights a second time through a wrapper (lightly's masked
        ViT wraps the same timm model); safetensors refuses shared tensors, and the backbone's own
        key is the one other tasks read, so later aliases are dropped.
        """
        state: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
        for key, value in self.backbone.state_dict(prefix="backbone.").items():
            seen.add((value.data_ptr(), tuple(value.shape), tuple(value.stride())))
            state[key] = value
        for key, value in self.state_dict().items():
            if key in state:
                continue
            ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
            if value.numel() and ident in seen:
                continue
            seen.add(ident)
            state[key] = value
        return state
