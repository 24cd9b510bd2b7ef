"""The CPU workaround for data-parallel EmbeddingCollection tables: fbgemm's dense kernel asked for bags of
one id returns each id's row, with the gradients of plain indexing."""

from __future__ import annotations

import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import DenseTableBatchedEmbeddingBagsCodegen

from recsys.models.torchrec_cpu import unpooled_lookup


def test_rows_and_gradients_equal_plain_indexing():
    # Tables of 10 and 6 rows; features 0 and 1 read table 0, feature 2 reads table 1; batch of 2.
    module = DenseTableBatchedEmbeddingBagsCodegen([(10, 4), (6, 4)], feature_table_map=[0, 0, 1],
                                                   pooling_mode=PoolingMode.NONE, use_cpu=True)
    # f0: [1, 2, 2], [3]; f1: [], [9]; f2: [5], [0, 1, 5]  (repeated ids, an empty bag)
    ids = torch.tensor([1, 2, 2, 3, 9, 5, 0, 1, 5])
    offsets = torch.tensor([0, 3, 4, 4, 5, 6, 9])
    pooled = module(indices=ids, offsets=offsets)
    assert pooled.shape[0] == 2  # the kernel's own answer on CPU: pooled bags, not one row per id
    weights = module.weights.detach().clone().requires_grad_()
    tables = [weights[:40].view(10, 4), weights[40:].view(6, 4)]
    want = torch.cat([tables[0][ids[:4]], tables[0][ids[4:5]], tables[1][ids[5:]]])
    got = unpooled_lookup(module, ids, offsets, num_features=3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    upstream = torch.randn_like(want)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    torch.testing.assert_close(module.weights.grad, weights.grad)


def test_no_ids_gives_no_rows():
    module = DenseTableBatchedEmbeddingBagsCodegen([(10, 4)], pooling_mode=PoolingMode.NONE, use_cpu=True)
    out = unpooled_lookup(module, torch.zeros(0, dtype=torch.long), torch.zeros(3, dtype=torch.long), num_features=1)
    assert out.shape == (0, 4)
