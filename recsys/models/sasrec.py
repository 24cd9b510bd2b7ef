"""SASRec-style next-item model: causal self-attention over a user's item history.

Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018: item + learned position
embeddings, a stack of causal Transformer blocks, and the score of item ``j`` after position ``t`` is the
dot product of the block output with ``j``'s (shared) input embedding (Sec. III). The paper trains with
one sampled negative and binary cross-entropy; ``loss="ce"`` (softmax over the whole catalogue) is the
common stronger variant and the default here; ``loss="bce"`` with sampled negatives is the paper's.

The item table is a torchrec ``EmbeddingCollection`` fed by the batch's ``KeyedJaggedTensor``, so the
table can be sharded by torchrec's DistributedModelParallel without changing the model. The table is also
the output layer; once sharded (:class:`recsys.models.sharding.TorchrecStrategy`) no rank holds it whole,
so the rows the output needs (the catalogue, or the sampled candidates) are looked up through the
collection in the same call as the history, as a second feature ``output`` of the ``item`` table: one
all-to-all, and one fused optimizer update of the table per step. Unsharded, the output reads the weights.

``output="linear"`` instead scores with a separate ``[num_items, dim]`` matrix ``head`` (untied from the
input table): the SASRec of MuonRec's code (arXiv 2603.00416, ``experiments/traditional/sasrec_muon.py``:
an ``s_fc = nn.Linear(hidden, item_num)`` item-scoring head, which its recipe optimizes with Muon; see
``../shared/PAPERS.md`` Sec. 3.3). Ours has no bias, so that a score stays a dot product with an output row.
The head is a dense parameter: under DistributedModelParallel it is replicated, not sharded.

Input (a KJT with key ``"item"``), for histories ``[5, 9, 2]`` and ``[7]``::

    values = [5, 9, 2, 7], lengths = [3, 1]  ->  hidden [2, max_len, dim], right-padded
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from recsys.models.jagged import to_padded


#: The feature of the item table that carries the output layer's rows (see :meth:`SASRec.lookup`).
OUTPUT_KEY = "output"


@dataclass
class SASRecConfig:
    num_items: int  # vocabulary size including the padding index 0
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    #: ``"meta"``: create the item table without memory, for torchrec to materialize only each rank's
    #: shard (a 10M-row table never exists whole on one rank); the rows are then drawn per shard, so the
    #: initial table differs from a ``"cpu"`` one of the same seed.
    embedding_device: str = "cpu"
    #: ``"tied"``: the item table is the output layer (Kang and McAuley); ``"linear"``: a separate item-
    #: scoring matrix ``head`` (MuonRec's SASRec; see the module docstring).
    output: str = "tied"

    def __post_init__(self) -> None:
        if self.output not in ("tied", "linear"):
            raise ValueError(f"output must be 'tied' or 'linear', got {self.output!r}")


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        std = config.dim**-0.5
        self.items = EmbeddingCollection(
            tables=[EmbeddingConfig(name="item", embedding_dim=config.dim, num_embeddings=config.num_items,
                                    feature_names=["item", OUTPUT_KEY],
                                    # on meta, torchrec draws each shard's rows with this when it shards
                                    init_fn=partial(nn.init.normal_, std=std) if config.embedding_device == "meta" else None)],
            device=torch.device(config.embedding_device),
        )
        self.positions = nn.Embedding(config.max_len, config.dim)
        layer = nn.TransformerEncoderLayer(
            config.dim, config.num_heads, dim_feedforward=config.dim, dropout=config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = nn.Dropout(config.dropout)
        if config.embedding_device != "meta":
            nn.init.normal_(self.item_table, std=std)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.head = None
        if config.output == "linear":
            self.head = nn.Linear(config.dim, config.num_items, bias=False)
            nn.init.normal_(self.head.weight, std=std)

    @property
    def sharded(self) -> bool:
        """Whether DistributedModelParallel has replaced the collection by a sharded one."""
        return not isinstance(self.items, EmbeddingCollection)

    @property
    def item_table(self) -> torch.Tensor:
        """The ``[num_items, dim]`` item embedding weights (also the output layer when tied); unsharded only."""
        if self.sharded:
            raise RuntimeError("the item table is sharded: read its rows with encode(features, output=ids)")
        return self.items.embeddings["item"].weight

    def lookup(self, features: KeyedJaggedTensor, output: torch.Tensor | str | None = None
               ) -> tuple[JaggedTensor, torch.Tensor | None]:
        """The history's embeddings, and the output rows: ``output="all"`` the whole table ``[num_items,
        dim]``, a tensor of ids their rows ``[*ids.shape, dim]``, ``None`` none.

        Both come from one call of the collection; when sharded, the output ids ride along as feature
        ``output`` of the first sample (for histories ``[5, 9]`` and ``[7]`` and output ids ``[3, 8]``:
        ``item`` lengths ``[2, 1]``, ``output`` lengths ``[2, 0]``, values ``[5, 9, 7, 3, 8]``).
        """
        if self.head is not None:  # an untied output: the collection serves the history only
            embedded, _ = self.lookup_history(features)
            if output is None:
                return embedded, None
            return embedded, self.head.weight if isinstance(output, str) else F.embedding(output, self.head.weight)
        return self.lookup_history(features, output)

    def lookup_history(self, features: KeyedJaggedTensor, output: torch.Tensor | str | None = None
                       ) -> tuple[JaggedTensor, torch.Tensor | None]:
        """:meth:`lookup` with the output rows read from the item table (the tied output)."""
        hist = features["item"]
        ids = None
        if self.sharded and output is not None:
            ids = torch.arange(self.config.num_items, device=hist.values().device) if isinstance(output, str) else output
        n = 0 if ids is None else ids.numel()
        batch = hist.lengths().shape[0]
        if n and batch == 0:
            raise ValueError("output rows of a sharded table need a batch with at least one sample")
        out_lengths = torch.zeros_like(hist.lengths())
        if n:
            out_lengths[0] = n
        values = hist.values() if ids is None else torch.cat([hist.values(), ids.reshape(-1).to(hist.values().dtype)])
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item", OUTPUT_KEY], values=values,
                                                  lengths=torch.cat([hist.lengths(), out_lengths]))
        embedded = self.items(kjt)
        if output is None:
            return embedded["item"], None
        if ids is not None:
            rows = embedded[OUTPUT_KEY].values()
            return embedded["item"], rows if isinstance(output, str) else rows.reshape(*output.shape, -1)
        table = self.item_table
        # F.embedding, not ``table[output]``: advanced indexing's backward accumulates repeated ids in a
        # varying order on CPU threads (runs of one seed drift apart); embedding's backward does not.
        return embedded["item"], table if isinstance(output, str) else F.embedding(output, table)

    def forward(self, features: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, L, dim]`` (right-padded, ``L = max_len``) and history lengths ``[B]``.

        Histories must hold at most ``max_len`` items (the data modules cut them to their last ones).
        """
        hidden, lengths, _ = self.encode(features)
        return hidden, lengths

    def encode(self, features: KeyedJaggedTensor, output: torch.Tensor | str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` plus the output rows of :meth:`lookup`."""
        jt, rows = self.lookup(features, output)
        lengths = jt.lengths().clamp(max=self.config.max_len)
        L = self.config.max_len
        x = to_padded(jt.values(), jt.offsets(), L) * self.config.dim**0.5
        x = self.dropout(x + self.positions.weight[None, :L])
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
        x = self.blocks(x, mask=causal)
        return self.norm(x), lengths, rows

    def last_state(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, dim]``: the state after each whole history (an empty history gets the state at position
        0 of an all-padding row: a learned "no history" state)."""
        return self.last_state_and_rows(features)[0]

    def last_state_and_rows(self, features: KeyedJaggedTensor, output: torch.Tensor | str | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`last_state` and the output rows of :meth:`lookup`."""
        hidden, lengths, rows = self.encode(features, output)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), (lengths - 1).clamp(min=0)], rows

    def score_all(self, states: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, num_items]`` of every item (``table``: the output rows of ``lookup(..., "all")``,
        default the weights); the padding index 0 gets ``-inf``."""
        if table is None:
            table = self.item_table if self.head is None else self.head.weight
        scores = states @ table.T
        scores[:, 0] = float("-inf")
        return scores
