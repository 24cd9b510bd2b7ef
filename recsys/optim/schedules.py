"""Learning-rate schedules: linear warm-up then cosine decay, as a ``LambdaLR`` over every group.

The factor multiplies each group's own ``lr``, so MuonRec's two families keep their ratio.

>>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
>>> sched = warmup_cosine(opt, warmup_steps=2, total_steps=6, min_ratio=0.1)
>>> [round(sched.lr_lambdas[0](s), 3) for s in range(7)]
[0.5, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1]
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr * factor(step)``: linear from ``1/warmup`` to 1 over ``warmup_steps``, then cosine to
    ``min_ratio`` at ``total_steps`` (and ``min_ratio`` after)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
