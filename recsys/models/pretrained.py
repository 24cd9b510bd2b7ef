"""Fixed vectors per item and per user (text-encoder layers, their PCA, MARC codes) as ranking features.

MARC (arXiv 2604.18146, ``../shared/PAPERS.md`` §5) caches large-model representations of items and users
offline and feeds them, compressed, to a CTR model. This module is that last hop: a safetensors file with a
``[num_items, d]`` tensor ``item`` and/or a ``[num_users, d]`` tensor ``user`` (row ``i`` = vocabulary index
``i`` of the prepared dataset, row 0 = padding), read by the ranking models (MMoE, PLE, DIN, DeepFM) as extra
single-valued features next to their id embeddings::

    kjt["item"] values [4, 7]  ->  item_vectors[[4, 7]]  [2, d]  -> standardize -> (bottleneck) -> Linear -> [2, dim]

The vectors are frozen buffers (saved in checkpoints); each column is standardized with its mean and
standard deviation over rows ``1..`` (hidden states of language models have a few huge dimensions that
would otherwise dominate). ``bottleneck=b`` puts a learned linear map to ``b`` dimensions first: the layer
probe's "learned linear" compression, trained with the CTR model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

KEYS = ("item", "user")


def load_vectors(path: str | Path, cardinalities: dict[str, int]) -> dict[str, torch.Tensor]:
    """The vectors of ``path`` checked against the data module's vocabulary sizes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such vectors file (safetensors with 'item' and/or 'user')")
    wanted = [k for k in KEYS if k in cardinalities]  # the keys the reader has vocabularies for
    tables = {k: v for k, v in load_file(str(path)).items() if k in wanted}
    if not tables:
        raise ValueError(f"{path}: holds none of {wanted} (expected safetensors with 'item' and/or 'user')")
    for key, table in tables.items():
        if table.ndim != 2 or table.shape[0] != cardinalities.get(key, -1):
            raise ValueError(f"{path}: '{key}' is {tuple(table.shape)}, expected [{cardinalities.get(key)}, d] "
                             f"(one row per {key} index of the prepared dataset, row 0 = padding)")
    return tables


class PretrainedFeatures(nn.Module):
    """Frozen per-entity vectors, standardized and projected to ``dim`` (see the module docstring)."""

    def __init__(self, tables: dict[str, torch.Tensor], dim: int, bottleneck: int | None = None) -> None:
        super().__init__()
        self.keys = list(tables)
        self.proj = nn.ModuleDict()
        for key, table in tables.items():
            table = table.float()
            mean, std = table[1:].mean(0), table[1:].std(0).clamp(min=1e-6)
            standardized = (table - mean) / std
            standardized[0] = 0
            self.register_buffer(f"{key}_vectors", standardized)
            d = table.shape[1]
            self.proj[key] = nn.Sequential(nn.Linear(d, bottleneck, bias=False), nn.Linear(bottleneck, dim)) \
                if bottleneck else nn.Linear(d, dim)
        self.out_dim = dim * len(self.keys)

    def forward(self, features: KeyedJaggedTensor) -> list[torch.Tensor]:
        """One ``[B, dim]`` per key, from the batch's single-valued ``item`` / ``user`` ids."""
        return [self.proj[k](getattr(self, f"{k}_vectors")[features[k].values()]) for k in self.keys]
