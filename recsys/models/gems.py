"""GEMs: generative retrieval over lifelong histories with a multi-stream decoder (Zhou et al., "Breaking
the Long-Sequence Barrier in Generative Recommendation with a Multi-Stream Decoder", arXiv 2602.13631).

The paper's text is not public; this follows the abstract and a detailed public study note
(``../shared/PAPERS.md`` §2, marked [S] there), and fills the gaps with published designs it cites:
DeepSeek-V3.2's lightning indexer for the mid-term stream and VISTA's quasi-linear attention for the
lifecycle stream. Where we had to choose, the docstrings say so (reconstruction).

* **Recent stream** (Sec. 3.2 [S]): per-event features (item, author, the item's tags and video duration
  where the data has them, action bits, age, and the event's play time where the data has it) embedded and
  summed, then a pre-norm self-attention encoder with positions counted from the newest event. (The paper
  concatenates them and projects with an MLP; a sum of embeddings is the same linear map before the
  encoder.)
* **Mid-term stream** (Sec. 3.3 [S]): the events' embeddings are the keys and values of a per-layer
  cross-attention. A lightweight **indexer** (``indexer_heads`` heads of ``indexer_dim``, ReLU scores
  ``I_{t,s} = sum_h w_{t,h} ReLU(q_{t,h} . k_s)``, DeepSeek-V3.2's DSA) selects the top-``top_k`` keys per
  decoder query. It is trained by ``KL(p_full || softmax(I))`` towards the head-averaged full attention
  (detached), with its own inputs detached, so it never changes the main model.
* **Lifecycle stream** (Sec. 3.4 [S]; VISTA): a quasi-linear attention summariser compresses all older
  events into ``summary_tokens`` tokens: ``M = mean_i phi(K_i)^T V_i`` (``phi`` = SiLU), summaries
  ``S = LayerNorm(phi(Q_S) M)`` with learned queries ``Q_S``. ``M`` is a running sum, so a user's summary is
  cached offline and updated incrementally as events age out of the mid-term window
  (:class:`LifecycleCache`). A reconstruction loss trains it: from the summaries, attention with an
  event's age as the query must reproduce the event's (detached) embedding (our reconstruction of VISTA's
  ``L_recon``).
* **Decoder** (Sec. 3.5 [S]): over ``[BOS, s_1, .., s_{L-1}]``; each block runs causal self-attention, then
  per stream its own cross-attention and feed-forward, and fuses the streams **without parameters**: the
  sum of the streams' updates (``D' + sum_s (D*_s - D')``, so the shared residual is counted once).
  Logits of level ``l`` are dot products with that level's code embeddings (tied). Next-token loss.
* **Three-stage schedule** (Sec. 3.6 [S]): ``stage=1`` dense attention, no indexer loss; ``stage=2`` adds
  the indexer loss (still dense); ``stage=3`` selects the top-K mid-term keys (training matches serving).

Shapes, for B samples, streams of lengths R (recent), M (mid), O (lifecycle), L SID levels, width d::

    recent [B, R, d] -> encoder;  mid [B, M, d] keys/values;  life [B, O, d] -> summaries [B, S, d]
    decoder input [B, L, d] (BOS + L-1 tokens) -> logits per level [B, C_l]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.attention import EncoderBlock, FeedForward, SelfAttention
from recsys.models.distributed import global_mean
from recsys.models.features import SparseFeatures
from recsys.models.jagged import padding_mask, to_padded
from recsys.models.shared_index import can_fuse, lightning_scores, shared_scores_reference, shared_scores_triton

STREAMS = ("recent", "mid", "life")
#: Boundaries (hours) of the event-age buckets. ``log2``: roughly doubling widths, a week resolved only as
#: "4-7 days" or "7-14 days". ``daily``: one bucket per day up to 60 days (then 90, 180, 365 days): a
#: model can tell an interest last seen 7 days ago from one seen 8 days ago, which matters where interests
#: come back on a schedule (weekly, monthly). Our addition: the paper encodes timestamps per event
#: (PAPERS.md §2.2) without saying how.
AGE_EDGES = {
    "log2": (1, 3, 6, 12, 24, 48, 96, 168, 336, 720, 1440, 4320, 8760),
    "daily": (1, 3, 6, 12, *range(24, 24 * 61, 24), 2160, 4320, 8760),
}
#: Boundaries (seconds) of the play-time buckets: 0 (unknown or none: bucket 0), then doubling widths from
#: 2 s to 17 min (a skip, a glance, a full short video, a long watch). Our choice; the paper lists play
#: duration among the per-event features (PAPERS.md §2.2) without saying how it is encoded.
PLAY_EDGES_S = (0.0, *(float(2**k) for k in range(1, 11)))


@dataclass
class GEMsConfig:
    num_items: int
    codebook_sizes: tuple[int, ...]
    dim: int = 64
    heads: int = 4
    layers: int = 2
    encoder_layers: int = 2
    streams: tuple[str, ...] = STREAMS
    recent: int = 64
    indexer_heads: int = 2
    indexer_dim: int = 16
    top_k: int = 64
    #: At a beam-search step, the beams of a user pick this many mid-term keys together (by each key's best
    #: indexer score over them) and all attend to those, instead of each beam its own ``top_k``
    #: (:mod:`recsys.models.shared_index`; our serving choice, not the paper's). ``None``: per query.
    shared_top_k: int | None = None
    summary_tokens: int = 8
    num_actions: int = 8
    cardinalities: dict[str, int] = field(default_factory=dict)  # the batch's KJT keys (author tables)
    #: Item attributes embedded with every event: ``{name: (cardinality, slots)}``, e.g. ``tags`` (3 slots)
    #: and ``duration`` (1), :func:`recsys.data.lifelong.item_attributes`; the per-item ids are buffers.
    attributes: dict[str, tuple[int, int]] = field(default_factory=dict)
    dropout: float = 0.1
    #: How the streams' updates combine: ``"sum"`` (the paper's parameter-free fusion), ``"mean"`` (the
    #: same divided by the number of streams; an ablation of the fusion's scale, still parameter-free) or
    #: ``"gated"`` (each stream's update times a learned per-channel gain, 1 for the first stream and 0 for
    #: the others at initialisation: ReZero / LayerScale style, our addition, not the paper's).
    fusion: str = "sum"
    #: Event-age buckets of every stream's events: a key of :data:`AGE_EDGES`.
    age_buckets: str = "log2"
    #: Embed each event's play time (seconds, :data:`PLAY_EDGES_S` buckets; the batch's ``plays``).
    play_time: bool = False

    def __post_init__(self) -> None:
        if self.fusion not in ("sum", "mean", "gated"):
            raise ValueError(f"fusion must be 'sum', 'mean' or 'gated', got {self.fusion!r}")
        if self.age_buckets not in AGE_EDGES:
            raise ValueError(f"age_buckets must be one of {sorted(AGE_EDGES)}, got {self.age_buckets!r}")

    @classmethod
    def from_hparams(cls, hparams: dict, codebook_sizes: Sequence[int],
                     attributes: dict[str, tuple[int, int]] | None = None) -> GEMsConfig:
        """The config a :class:`~recsys.models.gems_module.GEMsModule` with these hyperparameters builds
        (what its checkpoints save), so that a checkpoint can be rebuilt without Lightning; ``attributes``
        as read from the module's ``item_attributes`` file."""
        cards = dict(hparams["cardinalities"])
        streams = tuple(hparams.get("streams", STREAMS))
        names = ("dim", "heads", "layers", "encoder_layers", "recent", "indexer_heads", "indexer_dim", "top_k",
                 "shared_top_k", "summary_tokens", "dropout", "fusion", "age_buckets", "play_time")
        return cls(num_items=int(next(v for k, v in cards.items() if k in STREAMS)),
                   codebook_sizes=tuple(int(c) for c in codebook_sizes), streams=streams,
                   cardinalities={k: v for k, v in cards.items() if k.split("_")[0] in streams},
                   attributes=dict(attributes or {}),
                   **{k: hparams[k] for k in names if k in hparams})


class EventEmbedding(nn.Module):
    """An event = item + author (if any) + the item's attributes (if any) + its action bits (a sum of bit
    embeddings) + its age bucket + its play-time bucket (if ``config.play_time``).

    Items and authors of all three streams share one torchrec table each (``recent``, ``mid``, ``life``
    read ``item``; ``*_author`` read ``author``). Attributes are looked up from the item ids: buffer
    ``attr_<name> [num_items, slots]`` of attribute ids (0 = none), each slot's embedding summed, e.g. an
    item with tags ``[5, 2, 0]`` adds ``tags[5] + tags[2]``."""

    def __init__(self, config: GEMsConfig) -> None:
        super().__init__()
        cards = {k: v for k, v in config.cardinalities.items() if k in STREAMS or k.endswith("_author")}
        shared = {k: ("author" if k.endswith("_author") else "item") for k in cards}
        self.features = SparseFeatures(cards, config.dim, tables=shared)
        self.bits = nn.Parameter(torch.randn(config.num_actions, config.dim) * 0.02)
        edges = AGE_EDGES[config.age_buckets]
        self.age = nn.Embedding(len(edges) + 1, config.dim)
        self.register_buffer("edges", torch.tensor(edges, dtype=torch.float32), persistent=False)
        self.norm = nn.LayerNorm(config.dim)
        self.attribute_tables = nn.ModuleDict()
        for name, (cardinality, slots) in config.attributes.items():
            self.register_buffer(f"attr_{name}", torch.zeros(config.num_items, slots, dtype=torch.long))
            self.attribute_tables[name] = nn.Embedding(cardinality, config.dim, padding_idx=0)
        self.play = nn.Embedding(len(PLAY_EDGES_S) + 1, config.dim) if config.play_time else None
        if config.play_time:
            self.register_buffer("play_edges", torch.tensor(PLAY_EDGES_S, dtype=torch.float32), persistent=False)

    def attributes(self, items: torch.Tensor) -> torch.Tensor | None:
        """The summed attribute embeddings ``[..., d]`` of item ids ``[...]`` (``None`` without attributes)."""
        out = None
        for name, table in self.attribute_tables.items():
            x = table(getattr(self, f"attr_{name}")[items]).sum(-2)
            out = x if out is None else out + x
        return out

    def forward(self, embedded: dict, stream: str, actions: torch.Tensor, ages: torch.Tensor,
                items: torch.Tensor | None = None, plays: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, d]`` events of ``stream`` from the embedded KJT (see :class:`SparseFeatures`); ``items``
        ``[N]``, the stream's item ids, for the attributes; ``plays`` ``[N]``, play times in seconds."""
        x = embedded[stream].values()
        if f"{stream}_author" in embedded:
            x = x + embedded[f"{stream}_author"].values()
        return self.combine(x, actions, ages, items, plays)

    def combine(self, x: torch.Tensor, actions: torch.Tensor, ages: torch.Tensor,
                items: torch.Tensor | None = None, plays: torch.Tensor | None = None) -> torch.Tensor:
        """Item (+ author) embeddings ``[..., d]`` plus the items' attributes (given their ids ``items``), the
        action bits, the age bucket and the play-time bucket (``plays`` in seconds; ``None`` = all unknown),
        normalized (any leading shape: flat events here, padded windows in :mod:`recsys.quant.gems_serving`)."""
        attributes = None if items is None else self.attributes(items)
        if attributes is not None:
            x = x + attributes
        bits = ((actions[..., None] >> torch.arange(self.bits.shape[0], device=actions.device)) & 1).to(x.dtype)
        x = x + bits @ self.bits + self.age(torch.bucketize(ages, self.edges))
        if self.play is not None:
            bucket = (torch.zeros_like(actions) if plays is None
                      else torch.bucketize(plays.to(self.play_edges.dtype), self.play_edges))
            x = x + self.play(bucket)
        return self.norm(x)


class Indexer(nn.Module):
    """DSA-style lightning indexer: ReLU scores of a few small heads, weighted per query."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, head_dim)
        self.w = nn.Linear(dim, heads)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """The indexer's keys ``[B, M, head_dim]`` of a memory (shared by all layers; cached at serving)."""
        return self.k(memory)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``queries [B, T, d]`` and indexer keys ``[B, M, head_dim]`` (:meth:`keys`; both detached by the
        caller in training) -> scores ``I[b, t, m] = sum_j w[b, t, j] * relu(q[b, t, j] . k[b, m])``
        ``[B, T, M]`` (DSA's lightning indexer, PAPERS.md §2;
        :func:`~recsys.models.shared_index.lightning_scores`)."""
        b, t, _ = queries.shape
        return lightning_scores(self.q(queries).view(b, t, self.heads, self.head_dim), self.w(queries), keys)

    def shared_scores(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``queries [B, T, d]`` (a user's beams at one decoding step) -> ``[B, M]``: each key's best score
        over the user's queries, ``max_t I[b, t, m]`` (:mod:`recsys.models.shared_index`; our serving
        choice). One fused Triton kernel on a GPU, outside ``torch.compile`` / ``torch.export``; the plain
        reference elsewhere."""
        b, t, _ = queries.shape
        q = self.q(queries).view(b, t, self.heads, self.head_dim)
        w = self.w(queries)
        if can_fuse(q, keys):
            return shared_scores_triton(q, w, keys)
        return shared_scores_reference(q, w, keys)


class QuasiLinearSummarizer(nn.Module):
    """VISTA-style quasi-linear attention summary of the lifecycle stream (see the module docstring)."""

    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.queries = nn.Parameter(torch.randn(tokens, dim) * dim**-0.5)
        self.norm = nn.LayerNorm(dim)
        self.recon_q = nn.Linear(dim, dim)

    def state(self, events: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample ``sum_i phi(K_i)^T V_i`` ``[B, d, d]`` and the event count ``[B]`` (additive: cacheable).

        One batched ``phi(K)^T V`` over the zero-padded streams: memory ``O(B max_len d)``, never the
        ``[N, d, d]`` outer products of :meth:`state_reference`. (fbgemm's ``jagged_jagged_bmm`` computes
        the same without padding, but its CPU kernel measured ~175x slower than this bmm here.)"""
        lengths = offsets[1:] - offsets[:-1]
        max_len = max(int(lengths.max()) if lengths.numel() else 0, 1)
        k = to_padded(F.silu(self.k(events)), offsets, max_len)  # padding rows are 0: they add nothing
        return k.transpose(1, 2) @ to_padded(self.v(events), offsets, max_len), lengths.to(events.dtype)

    def state_reference(self, events: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain-PyTorch reference of :meth:`state` (sum of per-event outer products), for parity tests."""
        b = offsets.shape[0] - 1
        lengths = offsets[1:] - offsets[:-1]
        rows = torch.repeat_interleave(torch.arange(b, device=events.device), lengths)
        outer = F.silu(self.k(events))[:, :, None] * self.v(events)[:, None, :]  # [N, d, d]
        total = events.new_zeros(b, events.shape[1], events.shape[1]).index_add_(0, rows, outer)
        return total, lengths.to(events.dtype)

    def summaries(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``[B, tokens, d]`` from a (possibly cached) state; zeros for an empty lifecycle."""
        mean = total / count.clamp(min=1)[:, None, None]
        s = torch.einsum("sd,bde->bse", F.silu(self.queries), F.silu(mean))
        return self.norm(s) * (count > 0)[:, None, None].to(s.dtype)

    def reconstruction_loss(self, summaries: torch.Tensor, events: torch.Tensor, ages: torch.Tensor,
                            offsets: torch.Tensor) -> torch.Tensor:
        """Each lifecycle event's embedding (detached) predicted from its sample's summaries by attention
        with the event's age embedding as the query (``ages`` here are age embeddings ``[N, d]``)."""
        if events.shape[0] == 0:  # still a global mean: the other ranks' all-reduce needs this one
            return global_mean(summaries.sum() * 0.0, 0)
        lengths = offsets[1:] - offsets[:-1]
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=events.device), lengths)
        q = self.recon_q(ages)  # [N, d]
        # index_select, not ``summaries[rows]``: advanced indexing's backward (index_put_ accumulating
        # repeated rows) sums in a varying order on CPU threads, so runs of one seed drifted apart.
        per_event = summaries.index_select(0, rows)  # [N, S, d]
        att = torch.softmax(torch.einsum("nd,nsd->ns", q, per_event) / q.shape[-1] ** 0.5, dim=-1)
        pred = torch.einsum("ns,nsd->nd", att, per_event)
        # The mean over the global batch's events (their count differs between ranks).
        return global_mean(F.mse_loss(pred, events.detach(), reduction="sum"), events.numel())


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def project(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, H, M, d/H]`` of a memory (cacheable per user at serving time)."""
        b, m, d = memory.shape
        k, v = self.kv(memory).view(b, m, 2, self.heads, d // self.heads).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, T, d]`` attends to ``k, v [B, H, M, d/H]``; ``mask [B, T or 1, M]`` (True: attend).

        ``return_probs`` (the indexer's distillation target, training stage 2) needs the head-averaged
        attention weights, so it takes the explicit path; otherwise torch's fused
        ``scaled_dot_product_attention`` computes the same output without materializing ``[B, H, T, M]``
        scores, scaled scores, masks and probabilities one after the other (parity test:
        ``tests/models/test_gems.py``)."""
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        if not return_probs:
            return self._fused(q, k, v, mask), None
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5  # [B, H, T, M]
        if mask is not None:
            allowed = mask[:, None] | ~mask[:, None].any(-1, keepdim=True)  # an empty memory attends uniformly
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if mask is not None:
            probs = probs * mask[:, None].any(-1, keepdim=True)  # ... and contributes nothing
        out = F.dropout(probs, self.dropout, self.training) @ v
        out = self.out(out.transpose(1, 2).reshape(b, t, d))
        return out, (probs.mean(1) if return_probs else None)

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, t, _ = q.shape
        allowed = None
        if mask is not None:
            nonempty = mask.any(-1, keepdim=True)  # [B, T or 1, 1]
            allowed = (mask | ~nonempty)[:, None]  # an empty memory attends uniformly ...
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        if mask is not None:
            out = out * nonempty[:, None]  # ... and contributes nothing
        return self.out(out.transpose(1, 2).reshape(b, t, -1))


class DecoderBlock(nn.Module):
    """Causal self-attention, then per stream its own cross-attention and FFN, fused by a plain sum (or
    see :attr:`GEMsConfig.fusion`)."""

    def __init__(self, config: GEMsConfig) -> None:
        super().__init__()
        d = config.dim
        self.streams = config.streams
        self.self_norm = nn.RMSNorm(d)
        self.self_attn = SelfAttention(d, config.heads, config.dropout)
        self.cross_norm = nn.ModuleDict({s: nn.RMSNorm(d) for s in self.streams})
        self.cross = nn.ModuleDict({s: CrossAttention(d, config.heads, config.dropout) for s in self.streams})
        self.ffn_norm = nn.ModuleDict({s: nn.RMSNorm(d) for s in self.streams})
        self.ffn = nn.ModuleDict({s: FeedForward(d, config.dropout) for s in self.streams})
        self.fusion = config.fusion
        if config.fusion == "gated":
            # The model starts as its first stream alone (recent-only when ``recent`` is used) and learns
            # how much of each longer stream to add: their updates are noise to the decoder at first.
            self.gate = nn.ParameterDict({s: nn.Parameter(torch.full((d,), 1.0 if i == 0 else 0.0))
                                          for i, s in enumerate(self.streams)})

    def fuse(self, shared: torch.Tensor, updates: dict[str, torch.Tensor]) -> torch.Tensor:
        """The block's output: ``shared`` plus the streams' ``updates`` (each ``d_s - shared``) combined
        by the config's ``fusion`` (see :class:`GEMsConfig`)."""
        if self.fusion == "gated":
            return shared + sum(self.gate[s] * u for s, u in updates.items())
        total = sum(updates.values())
        return shared + (total / len(updates) if self.fusion == "mean" else total)


class GEMs(nn.Module):
    def __init__(self, config: GEMsConfig, attributes: dict[str, torch.Tensor] | None = None) -> None:
        """``attributes``: the items' attribute ids ``{name: [num_items, slots]}`` (``config.attributes``
        gives their shapes; without them the buffers start at zero, as before loading a state dict)."""
        super().__init__()
        self.config = config
        d = config.dim
        self.events = EventEmbedding(config)
        for name, ids in (attributes or {}).items():
            getattr(self.events, f"attr_{name}").copy_(ids)
        if "recent" in config.streams:
            self.recent_pos = nn.Parameter(torch.randn(config.recent, d) * 0.02)
            self.recent_encoder = nn.ModuleList(
                EncoderBlock(d, config.heads, config.dropout) for _ in range(config.encoder_layers))
        if "mid" in config.streams:
            self.indexer = Indexer(d, config.indexer_heads, config.indexer_dim)
        if "life" in config.streams:
            self.summarizer = QuasiLinearSummarizer(d, config.summary_tokens)
        self.codes = nn.ModuleList(nn.Embedding(c, d) for c in config.codebook_sizes)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.level_pos = nn.Parameter(torch.randn(len(config.codebook_sizes), d) * 0.02)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.final_norm = nn.RMSNorm(d)
        for table in self.codes:
            nn.init.normal_(table.weight, std=d**-0.5)

    # -- streams -------------------------------------------------------------------------------------------
    def encode(self, features: KeyedJaggedTensor, ages: dict[str, torch.Tensor], actions: dict[str, torch.Tensor],
               lifecycle: tuple[torch.Tensor, torch.Tensor] | None = None,
               plays: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """Per stream the memory the decoder reads: ``{"memory": [B, M, d], "mask": [B, M]}`` (plus the
        flat lifecycle events for the reconstruction loss). ``plays``: the events' play times per stream
        (:class:`~recsys.data.lifelong.LifelongBatch`; ``None``: unknown).

        Serving passes ``lifecycle``, the users' cached states ``(total [B, d, d], count [B])`` from
        :meth:`LifecycleCache.state`: the lifecycle summaries come from them and the batch's lifecycle
        events (then usually empty) are not read, so a request costs the same for 1k or 100k events."""
        embedded = self.events.features(features)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name in self.config.streams:
            if name == "life" and lifecycle is not None:
                summaries = self.summarizer.summaries(*lifecycle)
                out[name] = {"memory": summaries, "mask": (lifecycle[1] > 0)[:, None].expand(-1, summaries.shape[1])}
                continue
            events = self.events(embedded, name, actions[name], ages[name], items=features[name].values(),
                                 plays=None if plays is None else plays.get(name))
            offsets = embedded[name].offsets()
            lengths = offsets[1:] - offsets[:-1]
            if name == "life":
                total, count = self.summarizer.state(events, offsets)
                summaries = self.summarizer.summaries(total, count)
                mask = (count > 0)[:, None].expand(-1, summaries.shape[1])
                out[name] = {"memory": summaries, "mask": mask, "events": events, "offsets": offsets,
                             "ages": self.events.age(torch.bucketize(ages[name], self.events.edges))}
                continue
            length = max(int(lengths.max()) if lengths.numel() else 0, 1)
            if name == "recent":
                length = max(length, 1)
                padded = to_padded(events, offsets, length)
                # positions count from the newest event: right-align by flipping each row's real part
                pos = (lengths[:, None] - 1 - torch.arange(length, device=events.device)).clamp(min=0)
                # F.embedding, not ``recent_pos[pos]``: the backward of advanced indexing accumulates
                # with index_put_, whose parallel CPU kernel sums in a varying order (runs of the same
                # seed drifted apart); embedding's backward is deterministic.
                padded = padded + F.embedding(pos.clamp(max=self.config.recent - 1), self.recent_pos)
                mask = padding_mask(lengths, length)
                for layer in self.recent_encoder:
                    padded = layer(padded, key_mask=mask)
                out[name] = {"memory": padded * mask[..., None], "mask": mask}
            else:
                out[name] = {"memory": to_padded(events, offsets, length), "mask": padding_mask(lengths, length)}
        return out

    # -- decoder -------------------------------------------------------------------------------------------
    def token_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[BOS, s_1, .., s_t]`` embeddings for prefixes ``tokens [B, t]`` -> ``[B, t + 1, d]``."""
        b, t = tokens.shape
        parts = [self.bos.expand(b, 1, -1)]
        parts += [self.codes[level](tokens[:, level])[:, None] for level in range(t)]
        x = torch.cat(parts, dim=1)
        return x + self.level_pos[: t + 1]

    def decode(self, x: torch.Tensor, memories: dict[str, dict[str, torch.Tensor]], *, stage: int = 1,
               beams: int = 1, memory_kv: dict | None = None, self_cache: dict | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder states ``[N, T, d]`` for inputs ``x [N, T, d]`` and the indexer loss (0 unless training
        at stage >= 2). ``N = B * beams``: the ``beams`` rows of a user share that user's stream memories
        (``[B, ...]``), read by all their queries at once, never copied per beam.

        Serving passes ``memory_kv`` (each stream's keys/values per layer, projected once per user) and
        ``self_cache`` (per layer, the self-attention keys/values of earlier positions; ``x`` is then only
        the new position)."""
        indexer_loss = x.new_zeros(())
        n, t, d = x.shape
        b = n // beams
        for i, block in enumerate(self.blocks):
            h = block.self_norm(x)
            if self_cache is not None:  # keys/values of earlier positions are cached per layer
                attn = block.self_attn(h, cache=self_cache.setdefault(i, {}))
            else:
                attn = block.self_attn(h, causal=True)
            shared = x + attn
            updates = {}
            for s in block.streams:
                mem = memories[s]
                q = block.cross_norm[s](shared).reshape(b, beams * t, d)  # a user's queries together
                k, v = memory_kv[(s, i)] if memory_kv is not None else block.cross[s].project(mem["memory"])
                mask = mem["mask"][:, None, :]
                if s == "mid" and stage >= 2 and mem["memory"].shape[1] > 0:
                    keys = memory_kv["indexer"] if memory_kv is not None else self.indexer.keys(mem["memory"].detach())
                    if stage >= 3 and mem["memory"].shape[1] > self.config.top_k:
                        # t == 1: the rows are the user's beams at one step (none sees another's future)
                        out = self.indexed_read(block.cross[s], q, k, v, keys, mem["mask"], shared=beams > 1 and t == 1)
                    else:
                        out, full = block.cross[s](q, k, v, mask, return_probs=self.training)
                        if self.training:  # KL(p_full || softmax(I)), towards the detached full attention
                            scores = self.indexer(q.detach(), keys).masked_fill(~mask, float("-inf"))
                            target = full.detach()
                            log_p = torch.log_softmax(scores, dim=-1)
                            kl = target * (target.clamp(min=1e-9).log() - log_p)
                            indexer_loss = indexer_loss + kl.masked_fill(~mask.expand_as(kl), 0.0).sum(-1).mean()
                else:
                    out, _ = block.cross[s](q, k, v, mask)
                d_s = shared + out.reshape(n, t, d)
                d_s = d_s + block.ffn[s](block.ffn_norm[s](d_s))
                updates[s] = d_s - shared
            x = block.fuse(shared, updates)
        return self.final_norm(x), indexer_loss

    def memory_kv(self, memories: dict[str, dict[str, torch.Tensor]]) -> dict:
        """Every stream's keys/values for every layer, projected once (per user, shared by its beams)."""
        kv: dict = {(s, i): block.cross[s].project(memories[s]["memory"])
                    for i, block in enumerate(self.blocks) for s in block.streams}
        if "mid" in self.config.streams:
            kv["indexer"] = self.indexer.keys(memories["mid"]["memory"])
        return kv

    def step(self, prefix: torch.Tensor, state: dict, memories: dict, memory_kv: dict, beams: int,
             stage: int) -> tuple[torch.Tensor, dict]:
        """One decoding step for beam search: ``prefix [B * beams, l]`` -> log-probs of level ``l``."""
        n, l = prefix.shape
        if l == 0:
            x = self.bos.expand(n, 1, -1) + self.level_pos[0]
        else:
            x = self.codes[l - 1](prefix[:, l - 1])[:, None] + self.level_pos[l]
        cache = state.setdefault("self", {})
        states, _ = self.decode(x, memories, stage=stage, beams=beams, memory_kv=memory_kv, self_cache=cache)
        return torch.log_softmax(self.level_logits(states[:, -1], l), dim=-1), state

    def indexed_read(self, cross: CrossAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     keys: torch.Tensor, mask: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """The mid-term read at stage 3: queries ``q [B, T, d]`` score the memory's indexer ``keys
        [B, M, head_dim]``, keep their top-K (``mask [B, M]``: valid keys) and attend to those keys/values only
        (``k, v [B, H, M, d/H]``). ``shared`` (``q`` holds a user's beams at one step) with
        ``config.shared_top_k`` set: the user's queries pick ``shared_top_k`` keys together
        (:meth:`_shared_read`). One function so that ``benchmarks/gems_indexer_read.py`` times exactly what
        :meth:`decode` runs."""
        if shared and self.config.shared_top_k is not None:
            return self._shared_read(cross, q, k, v, keys, mask)
        scores = self.indexer(q.detach(), keys).masked_fill(~mask[:, None, :], float("-inf"))
        top = scores.topk(self.config.top_k, dim=-1, sorted=False).indices  # [B, T, K]
        return self._topk_attention(cross, q, k, v, top, mask)

    def _shared_read(self, cross: CrossAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A user's ``T`` queries read the ``shared_top_k`` keys with the best :meth:`Indexer.shared_scores`:
        one gather of ``B * K`` key/value rows (not ``B * T * K``), then the fused dense attention of all ``T``
        queries over them (flash attention: the user's keys read once for all its queries)."""
        b, m = mask.shape
        kk = self.config.shared_top_k
        if kk >= m:
            return cross(q, k, v, mask[:, None, :])[0]
        h, d = k.shape[1], k.shape[1] * k.shape[3]
        scores = self.indexer.shared_scores(q.detach(), keys).masked_fill(~mask, float("-inf"))
        top = scores.topk(kk, dim=-1, sorted=False).indices  # [B, K]
        rows = (top + torch.arange(b, device=top.device)[:, None] * m).reshape(-1)
        k_sel = k.transpose(1, 2).reshape(b * m, d).index_select(0, rows).view(b, kk, h, d // h).transpose(1, 2)
        v_sel = v.transpose(1, 2).reshape(b * m, d).index_select(0, rows).view(b, kk, h, d // h).transpose(1, 2)
        return cross(q, k_sel, v_sel, torch.gather(mask, 1, top)[:, None, :])[0]

    @staticmethod
    def _topk_attention(cross: CrossAttention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        top: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-attention of each query over its own top-K keys: ``top [B, T, K]`` indexes ``k, v [B, H, M, dh]``
        (``mask [B, M]``: valid keys).

        Each query's K key and value rows (all heads at once) are gathered with one ``index_select`` from
        the memory's row-major layout, ``T * K * d`` numbers instead of the ``T * M * d`` a dense read
        touches, and attended by the fused ``scaled_dot_product_attention`` as ``B * T`` problems of one
        query over K keys. Static shapes (``torch.export`` traces it as is). Same result as
        :meth:`_topk_attention_reference` (parity test in ``tests/models/test_gems.py``)."""
        b, t, d = x.shape
        h, m, kk = k.shape[1], k.shape[2], top.shape[-1]
        rows = (top + torch.arange(b, device=top.device)[:, None, None] * m).reshape(-1)  # [B * T * K]
        # [B * M, d] rows: a free view of what :meth:`CrossAttention.project` returns (row-major [B, M, H, dh]
        # underneath); keys/values handed over contiguous in [B, H, M, dh] are copied once here
        k_sel = k.transpose(1, 2).reshape(b * m, d).index_select(0, rows)
        v_sel = v.transpose(1, 2).reshape(b * m, d).index_select(0, rows)
        k_sel = k_sel.view(b * t, kk, h, d // h).transpose(1, 2)  # [B * T, H, K, dh]
        v_sel = v_sel.view(b * t, kk, h, d // h).transpose(1, 2)
        q = cross.q(x).view(b * t, 1, h, d // h).transpose(1, 2)  # [B * T, H, 1, dh]
        valid = torch.gather(mask, 1, top.reshape(b, -1)).view(b * t, 1, 1, kk)
        nonempty = valid.any(-1, keepdim=True)
        out = F.scaled_dot_product_attention(q, k_sel, v_sel, attn_mask=valid | ~nonempty)
        out = out * nonempty  # a query whose picks are all padding reads nothing
        return cross.out(out.reshape(b, t, d))

    @staticmethod
    def _topk_attention_reference(cross: CrossAttention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                  top: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Plain reference of :meth:`_topk_attention`: gather each query's K keys and attend."""
        b, t, d = x.shape
        h = k.shape[1]
        q = cross.q(x).view(b, t, h, d // h).transpose(1, 2)  # [B, H, T, dh]
        idx = top[:, None, :, :, None].expand(b, h, t, top.shape[-1], d // h)
        k_sel = torch.gather(k[:, :, None].expand(b, h, t, k.shape[2], d // h), 3, idx)  # [B, H, T, K, dh]
        v_sel = torch.gather(v[:, :, None].expand(b, h, t, v.shape[2], d // h), 3, idx)
        valid = torch.gather(mask[:, None, :].expand(b, t, -1), 2, top)  # [B, T, K]
        scores = torch.einsum("bhtd,bhtkd->bhtk", q, k_sel) / (d // h) ** 0.5
        scores = scores.masked_fill(~valid[:, None], float("-inf"))
        probs = torch.nan_to_num(torch.softmax(scores, dim=-1))
        out = torch.einsum("bhtk,bhtkd->bhtd", probs, v_sel)
        return cross.out(out.transpose(1, 2).reshape(b, t, d))

    def level_logits(self, states: torch.Tensor, level: int) -> torch.Tensor:
        """Logits over level ``level``'s codes from decoder states ``[..., d]`` (tied embeddings)."""
        return states @ self.codes[level].weight.T

    def forward(self, features: KeyedJaggedTensor, ages: dict[str, torch.Tensor], actions: dict[str, torch.Tensor],
                target_sids: torch.Tensor, *, stage: int = 1,
                plays: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced training: next-token loss over the target SIDs ``[B, L]``, the indexer loss, and
        the lifecycle reconstruction loss."""
        memories = self.encode(features, ages, actions, plays=plays)
        levels = target_sids.shape[1]
        x = self.token_inputs(target_sids[:, :-1])
        states, indexer_loss = self.decode(x, memories, stage=stage)
        ntp = sum(F.cross_entropy(self.level_logits(states[:, lvl], lvl), target_sids[:, lvl]) for lvl in range(levels))
        out = {"ntp": ntp / levels, "indexer": indexer_loss}
        if "life" in memories:
            life = memories["life"]
            out["recon"] = self.summarizer.reconstruction_loss(life["memory"], life["events"], life["ages"], life["offsets"])
        return out


class LifecycleCache:
    """Per-user lifecycle state ``(sum phi(K)^T V, count)``, kept offline and updated incrementally.

    ``add(users, events)`` adds the contributions of events that aged out of the mid-term window (the
    state is a sum, so nothing is recomputed); ``summaries(users)`` gives the summary tokens. Memory is
    ``d x d`` floats per user, whatever the history length: how a user with 100k events is served with
    bounded memory.
    """

    def __init__(self, summarizer: QuasiLinearSummarizer, dim: int) -> None:
        self.summarizer = summarizer
        self.dim = dim
        self.total: dict[int, torch.Tensor] = {}
        self.count: dict[int, float] = {}

    @torch.no_grad()
    def add(self, user: int, events: torch.Tensor) -> None:
        """Fold ``events [n, d]`` (embedded) into ``user``'s state."""
        if events.shape[0] == 0:
            return
        total, count = self.summarizer.state(events, torch.tensor([0, events.shape[0]], device=events.device))
        self.total[user] = self.total.get(user, torch.zeros_like(total[0])) + total[0]
        self.count[user] = self.count.get(user, 0.0) + float(count[0])

    def state(self, users: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(total [B, d, d], count [B])`` of ``users`` (zeros for a user without lifecycle events), what
        :meth:`GEMs.encode` takes as ``lifecycle``."""
        totals = torch.stack([self.total.get(u, torch.zeros(self.dim, self.dim)) for u in users])
        return totals, torch.tensor([self.count.get(u, 0.0) for u in users])

    @torch.no_grad()
    def summaries(self, users: Sequence[int]) -> torch.Tensor:
        return self.summarizer.summaries(*self.state(users))
