"""Item vectors for semantic IDs when no trained model's item table is at hand: a truncated SVD of the
training-period user-item matrix (``log1p`` of interaction counts), item factors scaled by the singular
values, then L2-normalized. Items that co-occur in users' histories get nearby directions, which residual
k-means then turns into shared SID prefixes (the role of TIGER's content embeddings; GEMs builds its SIDs
from item embeddings too).

Why normalized: unnormalized, the first factor (popularity) dominates the vectors' lengths and k-means
splits by popularity: on the synthetic KuaiRand-1K-format data of ``benchmarks/gems_results.py`` (300 users,
6,000 items, 3 levels x 32 codes) the codes' perplexity per level was 5 / 8 / 7 and 86% of the items shared
their full code with another (the extra collision level needed 1,619 codes); normalized: 26 / 20 / 19 and
56% (244 codes).

>>> vectors = item_vectors(users=np.array([1, 1, 2, 2, 3]), items=np.array([1, 2, 1, 2, 3]),
...                        num_users=4, num_items=5, dim=2)
>>> tuple(vectors.shape), bool(torch.allclose(vectors[1], vectors[2], atol=1e-5))
((5, 2), True)
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.prepared import PreparedDataset
from recsys.data.splits import TRAIN


def item_vectors(users: np.ndarray, items: np.ndarray, *, num_users: int, num_items: int, dim: int = 64,
                 seed: int = 0) -> torch.Tensor:
    """``[num_items, dim]`` SVD item factors of the (user, item) pairs given (duplicates count)."""
    index = torch.from_numpy(np.stack([users.astype(np.int64), items.astype(np.int64)]))
    # Indices are checked (in range, non-negative) when the tensor is built: a bad id fails here, not in the SVD.
    matrix = torch.sparse_coo_tensor(index, torch.ones(users.shape[0]), (num_users, num_items),
                                     check_invariants=True).coalesce()
    matrix = torch.sparse_coo_tensor(matrix.indices(), torch.log1p(matrix.values()), matrix.shape,
                                     check_invariants=False)  # the indices of a coalesced tensor: valid
    q = min(dim, min(num_users, num_items) - 1)
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws from the global RNG: leave it as it was
        torch.manual_seed(seed)
        _, s, v = torch.svd_lowrank(matrix, q=q, niter=4)
    vectors = torch.nn.functional.normalize(v * s, dim=1)  # [num_items, q]; never-seen items stay 0
    if q < dim:
        vectors = torch.cat([vectors, vectors.new_zeros(num_items, dim - q)], dim=1)
    return vectors


def training_item_vectors(dataset: PreparedDataset, positive: str | list[str] | None = "click", dim: int = 64,
                          seed: int = 0) -> torch.Tensor:
    """:func:`item_vectors` of a prepared dataset's training-period positive events."""
    from recsys.data.retrieval import positive_sequences

    seq = positive_sequences(dataset, positive)
    keep = seq.split == TRAIN
    users = np.repeat(seq.users, seq.lengths)[keep]
    return item_vectors(users, seq.item[keep], num_users=dataset.num_users, num_items=dataset.num_items,
                        dim=dim, seed=seed)
