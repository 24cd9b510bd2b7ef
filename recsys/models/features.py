"""Sparse feature embeddings for the ranking models: one torchrec ``EmbeddingCollection`` over a batch's KJT.

Every key of the data module's ``feature_cardinalities`` gets a table of that size; ``history`` shares the
``item`` table and ``history_<field>`` the ``<field>`` table (the items a user consumed are the same items,
with the same categories, as the candidates). Single-valued keys come
out as ``[B, dim]``; jagged keys (``tags``, ``history``) as values ``[N, dim]`` with offsets, or mean-pooled.

For a batch of two samples with candidates ``[4, 7]`` and histories ``[5, 9, 2]`` and ``[]``::

    kjt["item"]    -> values [4, 7],    lengths [1, 1]  ->  single("item")  [2, dim]
    kjt["history"] -> values [5, 9, 2], lengths [3, 0]  ->  jagged("history") values [3, dim], offsets [0, 3, 3]

Because the tables live in one torchrec module, DistributedModelParallel can shard them unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor



def table_of(key: str) -> str:
    """The table a feature looks up: ``history`` -> ``item``, ``history_<field>`` -> ``<field>``."""
    if key == "history":
        return "item"
    return key.removeprefix("history_")


class SparseFeatures(nn.Module):
    """``tables`` maps a key to the table it reads (default :func:`table_of`); a table takes the size of
    its first key."""

    def __init__(self, cardinalities: dict[str, int], dim: int, *, init_std: float = 0.02,
                 tables: dict[str, str] | None = None) -> None:
        super().__init__()
        self.keys = list(cardinalities)
        owners: dict[str, list[str]] = {}
        for key in self.keys:
            owners.setdefault((tables or {}).get(key, table_of(key)), []).append(key)
        tables_config = [
            EmbeddingConfig(name=table, embedding_dim=dim, num_embeddings=cardinalities[features[0]],
                            feature_names=features)
            for table, features in owners.items()
        ]
        self.collection = EmbeddingCollection(tables=tables_config, device=torch.device("cpu"))
        self.dim = dim
        for table in self.collection.embeddings.values():
            nn.init.normal_(table.weight, std=init_std)

    def forward(self, features: KeyedJaggedTensor,
                relaxed: dict[str, torch.Tensor] | None = None) -> dict[str, JaggedTensor]:
        """Every key's embeddings. ``relaxed`` (a distilled memory's soft one-hot fields, see
        :class:`~recsys.data.batches.ChainBatch`): ``{key: probs [B, V]}`` for single-valued keys, embedded as
        ``probs @ table[:V]`` (the expected embedding) instead of the id the KJT holds. The ``V`` rows are
        looked up through the collection (the key's first sample asks for ids ``0..V-1``, the others for
        none), so a sharded table serves them as it serves any id::

            relaxed {"tab": [[0.1, 0.9], [1.0, 0.0]]}:  kjt["tab"] values [0, 1], lengths [2, 0]
            -> rows [2, dim] -> probs @ rows [2, dim], lengths [1, 1]
        """
        relaxed = {k: p for k, p in (relaxed or {}).items() if k in self.keys}
        if relaxed:
            parts = features.to_dict()
            for key, probs in relaxed.items():
                batch, size = probs.shape
                lengths = torch.zeros(batch, dtype=parts[key].lengths().dtype, device=probs.device)
                lengths[0] = size
                ids = torch.arange(size, dtype=parts[key].values().dtype, device=probs.device)
                parts[key] = JaggedTensor(values=ids, lengths=lengths)
            features = KeyedJaggedTensor.from_jt_dict(parts)
        out = self.collection(features)
        # Sharded by DistributedModelParallel, the collection returns a lazy awaitable of the dict (the
        # lookups' all-to-all in flight); wait for it, so callers get a plain dict either way.
        out = out if isinstance(out, dict) else out.wait()
        for key, probs in relaxed.items():
            rows = out[key].values()
            out[key] = JaggedTensor(values=probs.to(rows.dtype) @ rows,
                                    lengths=torch.ones(probs.shape[0], dtype=torch.int32, device=rows.device))
        return out

    @staticmethod
    def single(embedded: dict[str, JaggedTensor], key: str) -> torch.Tensor:
        """``[B, dim]`` of a key with exactly one id per sample."""
        return embedded[key].values()

    @staticmethod
    def pooled(embedded: dict[str, JaggedTensor], key: str) -> torch.Tensor:
        """``[B, dim]`` mean over a jagged key's values (zeros for an empty row)."""
        jt = embedded[key]
        lengths = jt.lengths()
        values = jt.values()
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=values.device), lengths)
        sums = values.new_zeros(lengths.shape[0], values.shape[-1]).index_add_(0, rows, values)
        return sums / lengths.clamp(min=1).unsqueeze(-1).to(sums.dtype)


def item_representation(embedded: dict[str, JaggedTensor], history: bool = False) -> torch.Tensor:
    """Sum of an item's id embedding and its categorical side-feature embeddings: ``[B, dim]`` for the
    candidates, or ``[N, dim]`` for the history entries (``history=True``; aligned with ``history``).

    The side fields are those with a ``history_<field>`` key; candidates and history share the tables,
    so both live in one space (what target attention compares)."""
    fields = [k.removeprefix("history_") for k in embedded if k.startswith("history_")]
    if history:
        return sum((embedded[f"history_{f}"].values() for f in fields), embedded["history"].values())
    return sum((embedded[f].values() for f in fields), embedded["item"].values())
