"""DINO: a student matches the centred, sharpened output of its own momentum (EMA) teacher.

Caron et al., 2021 (https://arxiv.org/abs/2104.14294). The teacher sees the two global views, the
student every view (multi-crop); loss: cross-entropy between teacher and student softmax outputs
over pairs of different views. The teacher's weights follow the student's,
``teacher <- m * teacher + (1 - m) * student``, with m rising from ``momentum`` to 1 on a cosine.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum

from omnivis.models.backbones import Backbone
from omnivis.tasks.pretrain.base import PretrainMethod


class DINO(PretrainMethod):
    """Student and EMA teacher (backbone + DINO head each), lightly's head and loss.

    The exported ``backbone`` is the teacher, as in the paper, where the teacher is the better
    feature extractor; the student lives under ``student_backbone`` / ``student_head``.

    Args:
        backbone: any backbone; it becomes the teacher and a copy of it the student.
        momentum: the teacher's EMA momentum at the start of training.
        hidden_dim, bottleneck_dim, out_dim: DINO head widths (small: tiny data, CPU).
    """

    def __init__(
        self, backbone: Backbone, momentum: float, hidden_dim: int = 256, bottleneck_dim: int = 64, out_dim: int = 1024
    ) -> None:
        super().__init__()
        self.base_momentum = momentum
        self.backbone = backbone
        self.teacher_head = DINOProjectionHead(backbone.num_features, hidden_dim, bottleneck_dim, out_dim)
        self.student_backbone = copy.deepcopy(backbone)
        self.student_head = DINOProjectionHead(
            backbone.num_features, hidden_dim, bottleneck_dim, out_dim, freeze_last_layer=1
        )
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=out_dim, warmup_teacher_temp=0.04, teacher_temp=0.04)

    def _student(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One backbone pass per view size (globals together, locals together): (B, out_dim) each."""
        out: list[torch.Tensor] = []
        groups: list[list[torch.Tensor]] = [list(views[:2]), list(views[2:])]
        for group in groups:
            if group:
                z = self.student_head(self.student_backbone.forward_pooled(torch.cat(group)))
                out.extend(z.chunk(len(group)))
        return out

    def training_loss(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """views: two global (B, C, S, S) batches, then any local (B, C, S/2, S/2) batches."""
        with torch.no_grad():
            teacher = self.teacher_head(self.backbone.forward_pooled(torch.cat(list(views[:2])))).chunk(2)
        loss = self.criterion(list(teacher), self._student(views))
        return loss, {}

    def after_backward(self, epoch: int) -> None:
        """Keep the head's last layer fixed during the first epoch (stabilizes early training)."""
        self.student_head.cancel_last_layer_gradients(epoch)

    def momentum_at(self, progress: float) -> float:
        """Cosine schedule from ``base_momentum`` (progress 0) to 1 (progress 1)."""
        return 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * min(1.0, progress)) + 1.0) / 2.0

    def after_step(self, progress: float) -> None:
        m = self.momentum_at(progress)
        update_momentum(self.student_backbone, self.backbone, m)
        update_momentum(self.student_head, self.teacher_head, m)
