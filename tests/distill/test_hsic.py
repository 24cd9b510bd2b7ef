"""HSIC: parity with the textbook trace formula, and the properties MARC's constraints rely on."""

from __future__ import annotations

import pytest
import torch

from recsys.distill.hsic import hsic, normalized_hsic, rbf_kernel


def _reference_hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / (n - 1)^2 with an explicit centring matrix (Gretton et al. 2005, Eq. 4), float64."""
    n = x.shape[0]
    k, l = rbf_kernel(x.double()).double(), rbf_kernel(y.double()).double()
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return torch.trace(k @ h @ l @ h) / (n - 1) ** 2


def test_matches_the_trace_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 3, generator=g)
    y = y + x[:, :3]
    torch.testing.assert_close(hsic(x, y).double(), _reference_hsic(x, y), rtol=1e-4, atol=1e-7)


def test_dependence_is_detected_and_scale_free():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g)
    independent = torch.randn(300, 6, generator=g)
    nonlinear = torch.sin(2 * x[:, :2]) + 0.1 * torch.randn(300, 2, generator=g)
    assert normalized_hsic(x, x) == pytest.approx(1.0, abs=1e-5)
    assert normalized_hsic(x, nonlinear) > 2 * normalized_hsic(x, independent)  # 2 of 6 dims, through sin
    # the median bandwidth makes it invariant to the scale of either side
    assert normalized_hsic(x, 1000 * nonlinear + 3) == pytest.approx(float(normalized_hsic(x, nonlinear)), rel=1e-3)
    assert float(normalized_hsic(x, nonlinear)) == pytest.approx(float(normalized_hsic(nonlinear, x)), rel=1e-5)


def test_gradients_flow_and_bad_shapes_are_refused():
    x = torch.randn(32, 4, requires_grad=True)
    normalized_hsic(x, torch.randn(32, 2)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="paired samples"):
        hsic(torch.randn(5, 2), torch.randn(4, 2))


def test_a_constant_side_gives_zero_and_finite_gradients():
    """A batch of dead ReLUs (all-zero hidden layer) must not turn MARC's loss into NaN."""
    x = torch.randn(16, 4, requires_grad=True)
    dead = torch.zeros(16, 3, requires_grad=True)
    value = normalized_hsic(x, dead)
    value.backward()
    assert float(value) == 0.0 and torch.isfinite(x.grad).all() and torch.isfinite(dead.grad).all()
