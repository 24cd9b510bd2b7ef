"""FP8 E4M3 linear: saturating casts, per-channel/per-token scales, both backends agree, error bounds."""

import pytest
import torch
from torch import nn

from recsys.quant.fp8 import E4M3, E4M3_MAX, Fp8Linear, quantize_rowwise, saturating_cast


def test_saturating_cast_clamps_instead_of_nan():
    x = torch.tensor([1e6, -1e6, 448.0, 0.0])
    y = saturating_cast(x).float()
    assert torch.equal(y, torch.tensor([E4M3_MAX, -E4M3_MAX, 448.0, 0.0]))


def test_rowwise_scales_are_per_row_and_zero_rows_stay_zero():
    w = torch.randn(6, 40) * torch.logspace(-3, 3, 6)[:, None]  # rows of very different magnitude
    w[2] = 0
    w8, scale = quantize_rowwise(w)
    assert w8.dtype == E4M3 and scale.shape == (6, 1)
    assert torch.equal(w8.float().abs().amax(1)[[0, 1, 3, 4, 5]], torch.full((5,), E4M3_MAX))  # amax maps to 448
    deq = w8.float() * scale
    assert torch.equal(deq[2], torch.zeros(40))
    rel = (deq - w).norm(dim=1) / w.norm(dim=1).clamp(min=1e-30)
    assert (rel[[0, 1, 3, 4, 5]] < 0.04).all()  # E4M3 has 3 mantissa bits: ~2^-4 worst-case, ~2-3% rms


@pytest.mark.parametrize("activation", ["dynamic", "static"])
def test_backends_agree_and_error_is_small(activation):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    absmax = float(x.abs().max())
    ref = Fp8Linear.from_linear(linear, activation=activation, input_absmax=absmax, backend="reference")
    fast = Fp8Linear.from_linear(linear, activation=activation, input_absmax=absmax, backend="scaled_mm")
    y_ref, y_fast = ref(x), fast(x)
    assert y_ref.shape == (5, 7, 48)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)  # same FP8 operands, fp32 accumulation
    exact = linear(x)
    assert (y_ref - exact).norm() / exact.norm() < 0.06
    x16 = x.bfloat16()
    y_bf16 = fast(x16)
    assert y_bf16.dtype == torch.bfloat16
    want = ref(x16.float())  # the same FP8 operands; only the output is rounded to bf16
    torch.testing.assert_close(y_bf16.float(), want, rtol=0, atol=2 ** -8 * float(want.abs().max()))


def test_per_token_scales_protect_small_tokens():
    """A token 1e5x smaller than its neighbours keeps its relative precision with per-token scales and
    falls into subnormals and zero under one static per-tensor scale (E4M3's exponents span ~2^17: a float format forgives
    a per-tensor scale far more than int8 would, but not five orders of magnitude)."""
    torch.manual_seed(0)
    linear = nn.Linear(32, 32, bias=False)
    x = torch.randn(4, 32)
    x[0] *= 1e-5
    with torch.no_grad():
        exact = linear(x)[0]
    dyn = Fp8Linear.from_linear(linear, backend="reference")(x)[0]
    sta = Fp8Linear.from_linear(linear, activation="static", input_absmax=float(x.abs().max()),
                                backend="reference")(x)[0]
    err = lambda y: float((y - exact).norm() / exact.norm())  # noqa: E731
    assert err(dyn) < 0.06
    assert err(sta) > 0.2 and err(sta) > 5 * err(dyn)  # mostly subnormal or zero in E4M3


def test_state_dict_round_trip_keeps_fp8_bytes():
    linear = Fp8Linear.from_linear(nn.Linear(32, 16), activation="static", input_absmax=3.0)
    copy = Fp8Linear(32, 16, activation="static")
    copy.load_state_dict(linear.state_dict())
    assert copy.weight.dtype == E4M3
    assert torch.equal(copy.weight.view(torch.uint8), linear.weight.view(torch.uint8))
    assert float(copy.input_scale) == pytest.approx(3.0 / 448)
    x = torch.randn(3, 32)
    torch.testing.assert_close(copy(x), linear(x))


def test_static_without_calibration_is_refused():
    with pytest.raises(ValueError, match="input_absmax"):
        Fp8Linear.from_linear(nn.Linear(16, 16), activation="static")
