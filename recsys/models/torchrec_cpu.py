"""Data-parallel ``EmbeddingCollection`` tables on CPU: a workaround for fbgemm's CPU dense kernel.

torchrec runs a data-parallel table (replicated on every rank, gradients all-reduced) through fbgemm's dense
table-batched embedding (``DenseTableBatchedEmbeddingBagsCodegen``) with ``PoolingMode.NONE``: one output row
per looked-up id, what ``EmbeddingCollection`` needs. fbgemm-gpu-cpu 1.9.0 ignores ``PoolingMode.NONE`` on CPU
and sums each bag (measured: ids ``[0, 1, 2]`` in bags ``[0, 2, 3]`` give 2 rows, not 3), so the sharded
collection fails to split its output.

:func:`patch_dense_sequence_lookup` makes torchrec's ``BatchedDenseEmbedding`` ask the same kernel for bags of
one id each, whose sums are the ids' rows. The kernel's pooled output is ``[bags, features x dim]`` with the
same number of bags for every feature, so the features' ids are laid out as bags ``0..n_f - 1`` of feature ``f``
(empty bags after them) and each feature's rows are cut from its column block::

    feature a: ids [4, 7, 9], feature b: ids [2]   ->  bags per feature 3, offsets [0, 1, 2, 3, 4, 4, 4]
    pooled [3, 2 x dim]: rows 0..2 of block a are ids 4, 7, 9; row 0 of block b is id 2  ->  [4 rows, dim]

Autograd flows through the kernel as before (dense gradients, all-reduced by DDP). On CUDA, and once fbgemm
honours ``PoolingMode.NONE`` on CPU, the original lookup runs (the patch only acts on CPU weights).
"""

from __future__ import annotations

from typing import Any

import torch

_PATCHED = False


def unpooled_lookup(emb_module: Any, indices: torch.Tensor, offsets: torch.Tensor, num_features: int) -> torch.Tensor:
    """``[len(indices), dim]`` rows of a dense table-batched embedding module called with pooled bags of
    one id each (see the module docstring); ``offsets`` are the KJT's, ``num_features x batch + 1`` long."""
    batch = (offsets.shape[0] - 1) // max(num_features, 1)
    bounds = offsets[:: batch] if batch else offsets.new_zeros(num_features + 1)  # [F + 1] feature starts
    counts = bounds[1:] - bounds[:-1]
    bags = int(counts.max()) if counts.numel() else 0
    if indices.numel() == 0 or bags == 0:
        dim = int(emb_module.D_offsets[1] - emb_module.D_offsets[0])
        return torch.zeros(0, dim, dtype=emb_module.weights.dtype, device=indices.device)
    steps = torch.arange(bags, device=offsets.device)
    one_each = bounds[:-1, None] + torch.minimum(steps[None, :], counts[:, None])  # [F, bags]
    one_each = torch.cat([one_each.reshape(-1), bounds[-1:]])
    pooled = emb_module(indices=indices, offsets=one_each)  # [bags, sum of dims]
    columns = emb_module.D_offsets.tolist()  # per feature: its column block of the pooled output
    parts = [pooled[:n, columns[f]: columns[f + 1]] for f, n in enumerate(counts.tolist())]
    return torch.cat(parts, dim=0)


def patch_dense_sequence_lookup() -> None:
    """Make torchrec's ``BatchedDenseEmbedding`` (data-parallel ``EmbeddingCollection`` tables) return one
    row per id on CPU. Idempotent; a no-op for weights on other devices."""
    global _PATCHED
    if _PATCHED:
        return
    from torchrec.distributed.batched_embedding_kernel import BatchedDenseEmbedding

    original = BatchedDenseEmbedding.forward

    def forward(self: Any, features: Any) -> torch.Tensor:
        module = self.emb_module
        if module.weights.device.type != "cpu":
            return original(self, features)
        return unpooled_lookup(module, features.values().long(), features.offsets().long(), len(features.keys()))

    BatchedDenseEmbedding.forward = forward
    _PATCHED = True
