"""fbgemm jagged kernels against their plain-PyTorch references (values and gradients)."""

from __future__ import annotations

import torch

from recsys.models.jagged import to_jagged, to_jagged_reference, to_padded, to_padded_reference


def test_padded_and_back_match_the_reference():
    torch.manual_seed(0)
    lengths = torch.tensor([3, 0, 5, 1, 7])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    values = torch.randn(int(lengths.sum()), 4, requires_grad=True)
    dense = to_padded(values, offsets, 6)  # the row of 7 is cut to 6
    ref = to_padded_reference(values, offsets, 6)
    assert torch.equal(dense, ref)
    (dense * torch.arange(6.0)[None, :, None]).sum().backward()
    grad = values.grad.clone()
    values.grad = None
    (ref * torch.arange(6.0)[None, :, None]).sum().backward()
    assert torch.equal(grad, values.grad)
    full = to_padded(values.detach(), offsets, 7)
    assert torch.equal(to_jagged(full, offsets), to_jagged_reference(full, offsets))
    assert torch.equal(to_jagged(full, offsets), values.detach())
