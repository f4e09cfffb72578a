"""The warmup + cosine learning-rate curve every task trains with, against timm's own scheduler.

We keep a ``LambdaLR`` (Lightning steps torch schedulers itself; timm's need a custom
``lr_scheduler_step`` hook in every module), so this test is what makes it timm's curve.
"""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from omnivis.tasks.common import adamw_with_warmup_cosine


@pytest.mark.parametrize("total,warmup", [(100, 10), (37, 0), (50, 49), (12, 3)])
def test_warmup_cosine_is_timms_cosine_scheduler(total, warmup):
    lr = 2e-3
    ours = adamw_with_warmup_cosine(torch.nn.Linear(2, 2), lr, 0.05, total, warmup)
    ours_opt, ours_sched = ours["optimizer"], ours["lr_scheduler"]["scheduler"]
    ref_opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)
    # timm: linear warmup from warmup_lr_init over warmup_t steps, then cosine to 0 over the rest
    ref = CosineLRScheduler(ref_opt, t_initial=total - warmup, lr_min=0.0, warmup_t=warmup,
                            warmup_lr_init=lr / (warmup + 1), warmup_prefix=True, t_in_epochs=False, cycle_limit=1)
    for step in range(total):
        ref.step_update(step)
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        ours_opt.step()
        ours_sched.step()
