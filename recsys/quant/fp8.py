"""FP8 E4M3 linear layers for post-training quantization (OneRec-V2 FP8 PTQ, arXiv 2603.11486;
``../shared/PAPERS.md`` §6.2-6.3).

The paper's recipe, which this follows: plain scale-based round-to-nearest ``x_hat = round(x / s)`` to
E4M3 (no GPTQ/AWQ/SmoothQuant), **per-output-channel** weight scales computed offline, **per-token dynamic**
activation scales computed at run time, FP8 GEMM with **FP32 accumulation**. Casts saturate: values beyond
E4M3's range (+-448) clamp to it instead of becoming NaN. Option: a **static per-tensor** activation scale
from calibration (no per-call amax; what a fused serving kernel often prefers).

Two backends compute ``y = x W^T + b`` from the same FP8 tensors:

* ``"scaled_mm"``: ``torch._scaled_mm`` with row-wise scales (``scale_a [M, 1]``, ``scale_b [1, N]``),
  the FP8 tensor-core GEMM on GPUs that have it (sm_89+); it also runs (slowly) on CPU.
* ``"reference"``: dequantize both operands, then an fp32 matmul (``compute_dtype`` can make it bf16). Any
  device. Given the same FP8 operands the two differ only by accumulation order (tests: <= 1e-5 relative
  on CPU in fp32; bf16 output adds bf16 rounding, 2^-8 relative).

``"auto"`` picks ``scaled_mm`` on a CUDA device with compute capability >= 8.9 and shapes it accepts
(in/out features multiples of 16), ``reference`` elsewhere.

>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> linear = nn.Linear(64, 32)
>>> fp8 = Fp8Linear.from_linear(linear)
>>> fp8.weight.dtype, fp8.weight_scale.shape              # FP8 weight, one fp32 scale per output channel
(torch.float8_e4m3fn, torch.Size([32, 1]))
>>> x = torch.randn(4, 10, 64)                              # any leading dims: each token gets its own scale
>>> err = (fp8(x) - linear(x)).norm() / linear(x).norm()
>>> bool(err < 0.05)
True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
_MIN_SCALE = 1e-12  # an all-zero row gets this scale (it quantizes to zeros either way)

Backend = Literal["auto", "scaled_mm", "reference"]


def saturating_cast(x: torch.Tensor) -> torch.Tensor:
    """``x`` (already divided by its scale) to E4M3, clamped to +-448 first (E4M3 has no infinity; what a
    plain cast does with larger values is backend-specific, NaN on some)."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(x8 [M, K] E4M3, scale [M, 1] fp32)`` with ``x ~= x8 * scale``, ``scale = amax_row / 448``.

    For a weight ``[out, in]`` the rows are the output channels; for activations ``[tokens, in]`` the rows
    are tokens (the per-token dynamic scale)."""
    x = x.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).clamp(min=_MIN_SCALE)
    return saturating_cast(x / scale), scale


def quantize_tensorwise(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` to E4M3 with one given (static, calibrated) scale."""
    return saturating_cast(x.float() / scale)


def fp8_gemm_supported(device: torch.device) -> bool:
    """Whether ``device`` has FP8 tensor cores (CUDA compute capability >= 8.9: Ada, Hopper, Blackwell)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


class Fp8Linear(nn.Module):
    """``nn.Linear`` with an E4M3 weight and per-output-channel fp32 scales (see the module docstring).

    Buffers (what an artifact stores): ``weight [out, in]`` E4M3, ``weight_scale [out, 1]`` fp32, ``bias
    [out]`` (kept in the original precision) or absent, and ``input_scale`` (a 0-d fp32 tensor) with
    ``activation="static"``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 activation: Literal["dynamic", "static"] = "dynamic", backend: Backend = "auto",
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.backend, self.compute_dtype = activation, backend, compute_dtype
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=E4M3))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("input_scale", torch.ones(()) if activation == "static" else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, activation: Literal["dynamic", "static"] = "dynamic",
                    input_absmax: float | None = None, backend: Backend = "auto",
                    compute_dtype: torch.dtype = torch.float32) -> Fp8Linear:
        """Quantize a trained ``linear`` (its weight per output channel). ``activation="static"`` needs
        ``input_absmax``, the largest ``|x|`` its input reached over the calibration batches."""
        if activation == "static" and input_absmax is None:
            raise ValueError("a static activation scale needs input_absmax from calibration")
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, activation=activation,
                  backend=backend, compute_dtype=compute_dtype).to(linear.weight.device)
        with torch.no_grad():
            w8, scale = quantize_rowwise(linear.weight.detach())
            out.weight.copy_(w8)
            out.weight_scale.copy_(scale)
            if linear.bias is not None:
                out.bias = linear.bias.detach().clone()
            if activation == "static":
                out.input_scale.fill_(max(float(input_absmax) / E4M3_MAX, _MIN_SCALE))
        return out

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale

    def _backend(self, x: torch.Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        fits = self.in_features % 16 == 0 and self.out_features % 16 == 0
        return "scaled_mm" if fits and fp8_gemm_supported(x.device) else "reference"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.activation == "static":
            x8 = quantize_tensorwise(x2, self.input_scale)
            x_scale = self.input_scale.expand(x2.shape[0], 1)
        else:
            x8, x_scale = quantize_rowwise(x2)
        if self._backend(x) == "scaled_mm":
            out_dtype = x.dtype if x.dtype in (torch.float32, torch.bfloat16) else torch.bfloat16
            y = torch._scaled_mm(x8, self.weight.t(), scale_a=x_scale.contiguous(),
                                 scale_b=self.weight_scale.t().contiguous(), out_dtype=out_dtype)
        else:
            dt = self.compute_dtype
            y = (x8.to(dt) * x_scale.to(dt)) @ (self.weight.to(dt) * self.weight_scale.to(dt)).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activation={self.activation}, backend={self.backend}")
