"""The beams of a user choosing their mid-term keys together: shared indexer scores (plain and Triton) and the
shared read (where GEMs' decoder uses it: ``tests/models/test_gems.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from recsys.models.gems import CrossAttention, GEMs, GEMsConfig, Indexer
from recsys.models.shared_index import shared_scores_reference


def test_shared_scores_are_each_keys_best_lightning_score_over_the_users_queries():
    """S[b, m] = max_t sum_h w[b, t, h] relu(q[b, t, h] . k[b, m]), written out in plain loops."""
    torch.manual_seed(0)
    b, t, h, d, m = 2, 5, 3, 4, 7
    q, w, keys = torch.randn(b, t, h, d), torch.randn(b, t, h), torch.randn(b, m, d)
    expected = torch.full((b, m), float("-inf"))
    for i in range(b):
        for j in range(m):
            for s in range(t):
                score = sum(w[i, s, c] * torch.relu(q[i, s, c] @ keys[i, j]) for c in range(h))
                expected[i, j] = max(expected[i, j], score)
    torch.testing.assert_close(shared_scores_reference(q, w, keys), expected, atol=1e-5, rtol=1e-5)
    indexer = Indexer(8, heads=2, head_dim=4)
    queries, memory = torch.randn(b, t, 8), torch.randn(b, m, 8)
    with torch.no_grad():  # the module's shared scores are the per-query lightning scores' max over queries
        torch.testing.assert_close(indexer.shared_scores(queries, indexer.keys(memory)),
                                   indexer(queries, indexer.keys(memory)).amax(1), atol=1e-5, rtol=1e-5)


_TRITON_PARITY = """
import torch
from recsys.models.shared_index import shared_scores_reference, shared_scores_triton, can_fuse
torch.manual_seed(0)
# T and M not multiples of the kernel's tiles; one query (T = 1); negative head weights
for b, t, h, d, m in [(2, 37, 2, 16, 150), (1, 1, 1, 32, 70), (3, 64, 3, 16, 64)]:
    q, w, k = torch.randn(b, t, h, d), torch.randn(b, t, h), torch.randn(b, m, d)
    assert can_fuse(q, k)
    ref, fused = shared_scores_reference(q, w, k), shared_scores_triton(q, w, k, block_m=32, block_t=16)
    assert fused.shape == (b, m) and fused.dtype == torch.float32
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)
print("ok")
"""


def test_the_triton_kernel_equals_the_reference():
    """The fused kernel, run by Triton's interpreter on the CPU (the same kernel code a GPU compiles)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when the kernel is defined: a fresh interpreter
    done = subprocess.run([sys.executable, "-c", _TRITON_PARITY], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_the_shared_read_attends_to_the_chosen_keys_only():
    """``_shared_read`` = dense attention of every query over the K keys of best shared score (and padding
    never chosen over a real key); with K >= M it is the dense read."""
    torch.manual_seed(0)
    cfg = GEMsConfig(num_items=50, codebook_sizes=(4, 4), dim=16, heads=2, layers=1, indexer_heads=2,
                     indexer_dim=8, top_k=2, shared_top_k=6, dropout=0.0)
    model = GEMs(cfg).eval()
    cross = model.blocks[0].cross["mid"]
    b, t, m = 3, 5, 20
    memory, q = torch.randn(b, m, 16), torch.randn(b, t, 16)
    mask = torch.rand(b, m) > 0.3
    mask[2, 8:] = False  # user 2: exactly 8 real keys
    k, v = cross.project(memory)
    keys = model.indexer.keys(memory)
    with torch.no_grad():
        out = model.indexed_read(cross, q, k, v, keys, mask, shared=True)
        scores = model.indexer(q, keys).amax(1).masked_fill(~mask, float("-inf"))
        chosen = torch.zeros_like(mask).scatter_(1, scores.topk(6, dim=-1).indices, True) & mask
        torch.testing.assert_close(out, cross(q, k, v, chosen[:, None, :])[0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out, cross(q, k, v, mask[:, None, :])[0], atol=1e-4)
        model.config.shared_top_k = m
        torch.testing.assert_close(model.indexed_read(cross, q, k, v, keys, mask, shared=True),
                                   cross(q, k, v, mask[:, None, :])[0])

