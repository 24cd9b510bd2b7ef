"""A plain multi-layer perceptron builder (experts, towers, gates' trunks, attention units).

``MLP(in_dim, dims, out_dim)`` is ``Linear -> activation [-> Dropout]`` for each hidden width in ``dims``,
then an optional linear output layer of width ``out_dim`` (no activation: logits or regression values).
With neither hidden layers nor ``out_dim`` it is the identity.

>>> m = MLP(8, (16, 4), out_dim=2)
>>> m.out_dim, tuple(m(torch.zeros(3, 8)).shape)
(2, (3, 2))
>>> MLP(8, (16,), activation="prelu").out_dim
16
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "prelu", "gelu", "silu"]
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class PReLU(nn.Module):
    """PReLU with one learned negative slope per feature of the **last** dimension (``nn.PReLU`` puts
    channels on dim 1, which is wrong for ``[B, L, D]`` sequences): ``max(0, x) + a * min(0, x)``."""

    def __init__(self, width: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((width,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def activation_layer(name: Activation, width: int) -> nn.Module:
    """The activation module; ``"prelu"`` learns one slope per feature (DIN's PReLU, Sec. 4.4)."""
    if name == "prelu":
        return PReLU(width)
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected relu, prelu, gelu or silu")
    return _ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``[..., in_dim] -> [..., out_dim]`` (``out_dim``: the last width; see the module docstring)."""

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int] = (),
        out_dim: int | None = None,
        *,
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in dims:
            layers += [nn.Linear(width, hidden), activation_layer(activation, hidden)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
