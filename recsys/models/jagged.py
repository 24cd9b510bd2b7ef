"""Jagged <-> padded dense conversions: fbgemm kernels, with plain-PyTorch references for parity tests.

A jagged batch stores rows of different lengths back to back: ``values [sum(lengths), D]`` and
``offsets [B + 1]``. For lengths ``[2, 0, 3]`` (offsets ``[0, 2, 2, 5]``) and ``max_len = 4``, the padded
form is ``[3, 4, D]`` with rows ``v0 v1 0 0 / 0 0 0 0 / v2 v3 v4 0``: real items first (right padding),
which suits causal attention (a real position never sees padding, which comes after it).

>>> v = torch.arange(5.).view(5, 1)
>>> off = torch.tensor([0, 2, 2, 5])
>>> to_padded(v, off, 4)[:, :, 0].tolist()
[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 3.0, 4.0, 0.0]]
>>> bool(torch.equal(to_jagged(to_padded(v, off, 4), off), v))
True
"""

from __future__ import annotations

import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
import torch


def to_padded(values: torch.Tensor, offsets: torch.Tensor, max_len: int, padding_value: float = 0.0) -> torch.Tensor:
    """``[sum(lengths), D]`` -> ``[B, max_len, D]`` (rows longer than ``max_len`` are truncated at the end)."""
    return torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [max_len], padding_value)


def to_jagged(dense: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``[B, max_len, D]`` -> ``[sum(lengths), D]``: the inverse of :func:`to_padded`."""
    return torch.ops.fbgemm.dense_to_jagged(dense, [offsets])[0]


def to_padded_reference(values: torch.Tensor, offsets: torch.Tensor, max_len: int, padding_value: float = 0.0) -> torch.Tensor:
    lengths = (offsets[1:] - offsets[:-1]).clamp(max=max_len)
    out = values.new_full((lengths.shape[0], max_len, *values.shape[1:]), padding_value)
    for b in range(lengths.shape[0]):
        start, n = int(offsets[b]), int(lengths[b])
        out[b, :n] = values[start : start + n]
    return out


def to_jagged_reference(dense: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    lengths = offsets[1:] - offsets[:-1]
    mask = torch.arange(dense.shape[1], device=dense.device)[None, :] < lengths[:, None]
    return dense[mask]


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B, max_len]`` bool, True at real (non-padding) positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
