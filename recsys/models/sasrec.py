"""SASRec-style next-item model: causal self-attention over a user's item history.

Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018: item + learned position
embeddings, a stack of causal Transformer blocks, and the score of item ``j`` after position ``t`` is the
dot product of the block output with ``j``'s (shared) input embedding (Sec. III). The paper trains with
one sampled negative and binary cross-entropy; ``loss="ce"`` (softmax over the whole catalogue) is the
common stronger variant and the default here; ``loss="bce"`` with sampled negatives is the paper's.

The item table is a torchrec ``EmbeddingCollection`` fed by the batch's ``KeyedJaggedTensor``, so the
table can be sharded by torchrec's DistributedModelParallel without changing the model.

Input (a KJT with key ``"item"``), for histories ``[5, 9, 2]`` and ``[7]``::

    values = [5, 9, 2, 7], lengths = [3, 1]  ->  hidden [2, max_len, dim], right-padded
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.jagged import to_padded


@dataclass
class SASRecConfig:
    num_items: int  # vocabulary size including the padding index 0
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.items = EmbeddingCollection(
            tables=[EmbeddingConfig(name="item", embedding_dim=config.dim, num_embeddings=config.num_items, feature_names=["item"])],
            device=torch.device("cpu"),
        )
        self.positions = nn.Embedding(config.max_len, config.dim)
        layer = nn.TransformerEncoderLayer(
            config.dim, config.num_heads, dim_feedforward=config.dim, dropout=config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.item_table, std=config.dim**-0.5)
        nn.init.normal_(self.positions.weight, std=0.02)

    @property
    def item_table(self) -> torch.Tensor:
        """The ``[num_items, dim]`` item embedding weights (also the output layer)."""
        return self.items.embeddings["item"].weight

    def forward(self, features: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, L, dim]`` (right-padded, ``L = max_len``) and history lengths ``[B]``.

        Histories must hold at most ``max_len`` items (the data modules cut them to their last ones).
        """
        jt = self.items(features)["item"]
        lengths = jt.lengths().clamp(max=self.config.max_len)
        L = self.config.max_len
        x = to_padded(jt.values(), jt.offsets(), L) * self.config.dim**0.5
        x = self.dropout(x + self.positions.weight[None, :L])
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
        x = self.blocks(x, mask=causal)
        return self.norm(x), lengths

    def last_state(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, dim]``: the state after each whole history (an empty history gets the state at position
        0 of an all-padding row: a learned "no history" state)."""
        hidden, lengths = self(features)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), (lengths - 1).clamp(min=0)]

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items]`` of every item; the padding index 0 gets ``-inf``."""
        scores = states @ self.item_table.T
        scores[:, 0] = float("-inf")
        return scores
