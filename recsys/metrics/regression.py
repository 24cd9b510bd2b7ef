"""Mean absolute error per column with a mask of which targets exist (e.g. per-action timing MAE).

>>> m = MaskedMAE(["like", "leave"])
>>> m.update(torch.tensor([[1.0, 0.5], [3.0, 0.2]]), torch.tensor([[2.0, 0.4], [0.0, 0.1]]),
...          torch.tensor([[True, True], [False, True]]))
>>> {k: round(float(v), 4) for k, v in m.compute().items()}
{'like': 1.0, 'leave': 0.1}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class MaskedMAE(Metric):
    """``{name: mean |pred - target| over rows where mask}``; NaN for a column without targets."""

    full_state_update = False

    def __init__(self, names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = list(names)
        self.add_state("abs_sum", default=torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> None:
        mask = mask.bool() & torch.isfinite(targets)
        err = (preds.double() - torch.nan_to_num(targets.double())).abs() * mask
        self.abs_sum += err.sum(0)
        self.count += mask.sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        mae = self.abs_sum / self.count
        return {name: mae[i].float() for i, name in enumerate(self.names)}
