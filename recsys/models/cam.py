"""CAM, A2Gen's Context-aware Attention Module (Li et al., SIGIR 2026, arXiv 2604.25834, Sec. 3; the
authors' ``main_modules/A2Gen_modules.py``).

The context enters the **query only**; keys and values come from the sequence. Each head's output is
projected back to the model width and the heads are fused by a softmax gate computed from the context
(task-specific head importance), plus a residual of the projected context::

    s = X W_s                        [B, L, d]
    u = c W_c                        [B, d], broadcast over L
    Q = [s ; u] W_q,  K = s W_k,  V = s W_v, split into H heads of d/H
    O_h = softmax(Q_h K_h^T / sqrt(d/H) + M) V_h W_o^h      [B, L, d]   (M: padding / causal mask)
    g = softmax(c W_g)               [B, H]
    CAM(X, c) = sum_h g_h O_h + u    [B, L, d]

An optional MLP post-block (``x + MLP(LayerNorm(x))``) follows, as in the authors' early PyTorch sketch.
``residual=True`` (our default) also adds the projected sequence ``s`` to the output, as a Transformer
block does: without it each position's output is only an attention mix of all positions plus the shared
context, so positions lose their identity (in A2Gen's generator this cost ~0.05 validation AUC on our
synthetic data; ``residual=False`` is the paper's formula).

>>> cam = CAM(seq_dim=8, context_dim=6, dim=16, heads=4)
>>> out = cam(torch.randn(3, 5, 8), torch.randn(3, 6), mask=torch.ones(3, 5, dtype=torch.bool))
>>> tuple(out.shape)
(3, 5, 16)
"""

from __future__ import annotations

import torch
from torch import nn


class CAM(nn.Module):
    def __init__(self, seq_dim: int, context_dim: int, dim: int = 32, heads: int = 4, *, mlp: bool = True,
                 residual: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.residual = residual
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.seq = nn.Linear(seq_dim, dim)
        self.context = nn.Linear(context_dim, dim)
        self.q = nn.Linear(2 * dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        # W_o of every head, stacked: [H * d/H, d]. One 2-D matrix (so Muon orthogonalizes it as the
        # d x d map it is), viewed per head in forward.
        self.out = nn.Parameter(torch.empty(dim, dim))
        nn.init.xavier_uniform_(self.out)
        self.gate = nn.Linear(context_dim, heads)
        self.drop = nn.Dropout(dropout)
        self.mlp = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            if mlp else None
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """``x [B, L, seq_dim]``, ``context [B, context_dim]``, ``mask [B, L]`` (True: a real position)."""
        b, length, _ = x.shape
        s = self.seq(x)
        u = self.context(context)
        q = self.q(torch.cat([s, u[:, None].expand(-1, length, -1)], dim=-1))
        k, v = self.k(s), self.v(s)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)  # [B, H, L, d/H]

        allowed = None
        if mask is not None:
            allowed = mask[:, None, None, :]  # keys
        if causal:
            tri = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            allowed = tri if allowed is None else allowed & tri
        if allowed is not None:
            # A row with no allowed key (an empty history) would give NaN; let it attend to everything
            # instead: its output is masked out by the caller.
            allowed = allowed | ~allowed.any(-1, keepdim=True)
        heads = nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=allowed, dropout_p=self.drop.p if self.training else 0.0
        )  # [B, H, L, d/H]
        per_head = torch.einsum("bhld,hde->bhle", heads, self.out.view(self.heads, self.head_dim, self.dim))  # [B, H, L, d]
        g = torch.softmax(self.gate(context), dim=-1)  # [B, H]
        y = torch.einsum("bh,bhle->ble", g, per_head) + u[:, None]
        if self.residual:
            y = y + s
        if self.mlp is not None:
            y = y + self.mlp(y)
        return y
