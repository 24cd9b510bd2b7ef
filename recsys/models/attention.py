"""Self-attention and a pre-norm Transformer block whose projections are plain ``nn.Linear`` modules.

``nn.MultiheadAttention`` keeps its q/k/v projection as one raw parameter read inside a fused kernel, so
it can be neither quantized projection by projection (FP8 PTQ, :mod:`recsys.quant`) nor given a KV cache.
These modules compute the same function (scaled dot-product attention, ``torch.nn.functional.
scaled_dot_product_attention``) with ``q``, ``k``, ``v`` and ``out`` as separate ``nn.Linear`` layers.

Masks are boolean, ``True`` = may attend. A query whose keys are all masked attends to nothing: its output is
0 (``nn.MultiheadAttention`` returns NaN there).

>>> attn = SelfAttention(dim=8, heads=2)
>>> x = torch.randn(3, 5, 8)                                     # [B, T, d]
>>> full = attn(x, causal=True)
>>> cache = {}                                                   # decode one position at a time
>>> steps = [attn(x[:, t:t + 1], cache=cache) for t in range(5)]
>>> torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # [B, H, T, dh]

    def forward(self, x: torch.Tensor, *, key_mask: torch.Tensor | None = None, causal: bool = False,
                cache: dict | None = None) -> torch.Tensor:
        """``x [B, T, d]`` -> ``[B, T, d]``.

        ``key_mask [B, T]``: which positions may be attended to (padding: False). ``causal``: position ``t``
        sees ``<= t``. ``cache``: incremental decoding; the keys/values of earlier calls are kept in it
        (``cache["k"], cache["v"]`` of shape ``[B, H, T_past, dh]``) and ``x`` holds only the new positions,
        which see all cached ones and, among themselves, the earlier ones.
        """
        b, t, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        past = 0
        if cache is not None:
            if "k" in cache:
                past = cache["k"].shape[2]
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
            causal = True
        mask = None
        if causal and t > 1:
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        if key_mask is not None:
            keys = key_mask[:, None, None, :]  # [B, 1, 1, T]
            mask = keys if mask is None else mask & keys
        empty = None
        if mask is not None:
            mask = mask.expand(b, 1, t, past + t)
            empty = ~mask.any(-1, keepdim=True)  # no key to attend to: attend uniformly, then zero it
            mask = mask | empty
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        return self.out(out.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Sequential):
    """``Linear(d, 4d) -> GELU -> Dropout -> Linear(4d, d)``."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))`` (the layout of
    ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), key_mask=key_mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))
