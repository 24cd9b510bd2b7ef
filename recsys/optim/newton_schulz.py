"""Orthogonalization by the quintic Newton-Schulz iteration (Muon's ``zeropower``), batched.

Muon (Jordan et al., 2024; the iteration MuonRec uses, arXiv 2603.00416 Sec. 3 and its ``muon.py``)
replaces an update matrix ``G = U S V^T`` by approximately its polar factor ``U V^T``. After scaling ``G`` by
its Frobenius norm (so every singular value is at most 1), five steps of

    X <- a X + (b A + c A^2) X,   A = X X^T,   (a, b, c) = (3.4445, -4.7750, 2.0315)

map each singular value ``s`` through the scalar polynomial ``p(s) = a s + b s^3 + c s^5`` five times. The
coefficients trade exactness for speed: the result is ``U S' V^T`` with ``S'`` inside a band rather than
exactly 1. Band of the five-step map (computed from ``p``, checked against the float64 SVD in the tests):

    s / ||G||_F in [0.01, 1]   ->  s' in [0.68, 1.14]
    s / ||G||_F in [0.003, 1]  ->  s' in [0.68, 1.21]

Smaller normalized singular values are not pushed all the way up (``p(s) ~ 3.4 s`` near 0).

The iteration runs in bfloat16 like ``torch.optim.Muon`` where bf16 matmuls are the fast ones: accelerators,
and CPUs with bf16 matrix instructions (AMX or AVX512_BF16). ``dtype=None`` (the default) picks float32 on
other CPUs, which emulate bf16 matmuls: on a 2 vCPU Xeon with AVX-512 but neither (2026-11-28) the five steps
took 4-6x longer in bf16 than in float32 for stacks from 16x8 to 512x256 (BENCHMARKS.md, "MuonRec optimizer
step"), and float32 is also the more exact. Same-shape matrices are stacked and iterated together
with batched matmuls (``baddbmm``): one launch per step for a whole stack instead of one per matrix.

>>> g = torch.randn(4, 64, 32)
>>> o = orthogonalize(g).float()
>>> s = torch.linalg.svdvals(o)
>>> bool(((s > 0.6) & (s < 1.25)).all())
True
"""

from __future__ import annotations

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def ns_dtype(device: torch.device | str) -> torch.dtype:
    """The iteration's default dtype on ``device``: bfloat16 (``torch.optim.Muon``'s) on accelerators and on
    CPUs with bf16 matrix instructions, float32 on other CPUs (see the module docstring).

    >>> ns_dtype("cuda")
    torch.bfloat16
    """
    if torch.device(device).type != "cpu":
        return torch.bfloat16
    return torch.bfloat16 if _cpu_has_bf16_matmul() else torch.float32


def _cpu_has_bf16_matmul() -> bool:
    """AMX tiles or AVX512_BF16 (torch's own CPU capability probes; absent in a torch without them: False)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def orthogonalize(
    g: Tensor,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = EPS,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximate polar factor of each matrix in ``g`` (``[m, n]`` or a stack ``[k, m, n]``), computed and
    returned in ``dtype`` (default :func:`ns_dtype` of ``g``'s device)."""
    a, b, c = coefficients
    x = g.to(dtype or ns_dtype(g.device))
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.mT
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    x = x / torch.linalg.matrix_norm(x, keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    if not batched:
        x = x.squeeze(0)
    return x.mT if tall else x
