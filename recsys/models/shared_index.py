"""The beams of one user choosing their mid-term keys together: a fused kernel for the indexer's shared scores.

At a beam-search step a user's ``T`` beams are ``T`` queries against the same mid-term memory. Instead of
each picking its own top-K (``T * K`` gathered rows, more than the ``M`` rows of the memory itself once
``T * K > M``), they can pick ``K_shared`` keys together, by each key's best indexer score over them::

    S[b, m] = max_t  sum_h  w[b, t, h] * relu(q[b, t, h] . k[b, m])      (the lightning indexer's I, max over t)

and all ``T`` queries attend to those keys through the fused dense attention. This is our serving choice,
not the paper's (GEMs selects per query, PAPERS.md §2.3); ``benchmarks/gems_indexer.py`` measures its
recall against brute force and ``benchmarks/gems_indexer_read.py`` its speed.

:func:`shared_scores_reference` computes ``S`` in plain PyTorch, writing the ``[B, T, H, M]`` scores out
(five kernels on a GPU, each a pass over ``B * T * M`` numbers). :func:`shared_scores_triton` computes it in
one Triton kernel that keeps a tile of keys in registers, runs over the user's queries and writes only
``[B, M]``. Parity test: ``tests/models/test_shared_index.py`` (Triton's interpreter on CPU).

Worked example: ``q [2, 100, 2, 32]`` (2 users x 100 beams x 2 indexer heads of 32), ``w [2, 100, 2]``,
``keys [2, 5000, 32]`` -> ``S [2, 5000]``; ``S.topk(1024)`` picks the keys all 100 beams of a user read.
"""

from __future__ import annotations

import torch

try:  # ships with torch's CUDA builds; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None


def lightning_scores(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``q [B, T, H, D]``, ``w [B, T, H]``, ``keys [B, M, D]`` -> ``I [B, T, M]``, the lightning indexer's
    ``sum_h w[b, t, h] * relu(q[b, t, h] . keys[b, m])``, as two batched matmuls: all heads of all queries
    against the keys at once, then the per-query head weights."""
    b, t, h, d = q.shape
    scores = torch.bmm(q.reshape(b, t * h, d), keys.transpose(1, 2)).relu_().view(b, t, h, -1)
    return (w.unsqueeze(2) @ scores).squeeze(2)


def shared_scores_reference(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """:func:`lightning_scores`' best over the user's queries: ``[B, M]``."""
    return lightning_scores(q, w, keys).amax(1)


def _fusable_width(d: int) -> bool:
    return d >= 16 and not d & (d - 1)  # a power of two >= 16: tl.dot's smallest tile


def can_fuse(q: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether :func:`shared_scores_triton` can run here: Triton importable; ``q`` and ``keys`` on a CUDA
    device, or Triton's interpreter switched on (``TRITON_INTERPRET=1``, CPU tensors: tests only); not
    while ``torch.compile`` or ``torch.export`` traces (they take the plain reference); the indexer's head
    width a power of two >= 16 (``tl.dot``'s smallest tile)."""
    import os

    return (triton is not None and (q.is_cuda and keys.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
            and not (torch.compiler.is_compiling() or torch.compiler.is_exporting()) and _fusable_width(q.shape[-1]))


if triton is not None:

    @triton.jit
    def _shared_scores_kernel(q_ptr, w_ptr, k_ptr, out_ptr, T, M,
                              stride_qb, stride_qt, stride_qh, stride_wb, stride_wt, stride_kb, stride_km,
                              stride_ob, H: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr,
                              BLOCK_M: tl.constexpr):
        # one program: user b, keys [pm * BLOCK_M, (pm + 1) * BLOCK_M); the tile of keys stays in registers
        # while the user's queries stream past it, BLOCK_T at a time, all H heads each
        b = tl.program_id(0)
        pm = tl.program_id(1)
        offs_m = pm * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        keys = tl.load(k_ptr + b * stride_kb + offs_m[:, None] * stride_km + offs_d[None, :],
                       mask=offs_m[:, None] < M, other=0.0)
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        for t0 in range(0, T, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            t_ok = offs_t < T
            total = tl.zeros([BLOCK_T, BLOCK_M], tl.float32)
            for h in tl.static_range(H):
                q = tl.load(q_ptr + b * stride_qb + offs_t[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                            mask=t_ok[:, None], other=0.0)
                w = tl.load(w_ptr + b * stride_wb + offs_t * stride_wt + h, mask=t_ok, other=0.0).to(tl.float32)
                total += tl.maximum(tl.dot(q, tl.trans(keys)), 0.0) * w[:, None]
            total = tl.where(t_ok[:, None], total, float("-inf"))
            best = tl.maximum(best, tl.max(total, axis=0))
        tl.store(out_ptr + b * stride_ob + offs_m, best, mask=offs_m < M)


def shared_scores_triton(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, block_m: int = 64,
                         block_t: int = 32) -> torch.Tensor:
    """:func:`shared_scores_reference` in one Triton kernel (fp32 accumulation; returns fp32 ``[B, M]``);
    see :func:`can_fuse` for where it runs."""
    if triton is None:
        raise RuntimeError("shared_scores_triton needs Triton (it ships with torch's CUDA builds)")
    b, t, h, d = q.shape
    m = keys.shape[1]
    if not _fusable_width(d):
        raise ValueError(f"the indexer's head width must be a power of two >= 16 for the fused kernel, got {d}")
    q, w, keys = q.contiguous(), w.contiguous(), keys.contiguous()
    out = torch.empty(b, m, device=q.device, dtype=torch.float32)
    grid = (b, triton.cdiv(m, block_m))
    _shared_scores_kernel[grid](q, w, keys, out, t, m, q.stride(0), q.stride(1), q.stride(2), w.stride(0),
                                w.stride(1), keys.stride(0), keys.stride(1), out.stride(0), H=h, D=d,
                                BLOCK_T=block_t, BLOCK_M=block_m)
    return out
