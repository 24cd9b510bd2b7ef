"""A2Gen: action-aware generative multi-task ranking (Li et al., "Action-Aware Generative Sequence Modeling
for Short Video Recommendation", SIGIR 2026, arXiv 2604.25834; the authors' TF1 code
``main_modules/A2Gen_modules.py`` and ``train/train.py``, read as a specification).

For a user and a candidate item, A2Gen generates the chain of actions the user will take and when
(:mod:`recsys.data.chains`), from three modules:

* **HSE**, the hierarchical sequence encoder (paper Sec. 3.2): inside each history item an action-level
  CAM (:mod:`.cam`) reads the item's action slots ``slot_a = flag_a * [timeEmb(t_a) ; e_a]`` with the item
  embedding as context, summed into ``Seq_j``; an item-level CAM reads ``[e_j ; Seq_j]`` over the history
  with the candidate item as context, summed into ``Vec_hist``.
* **AAG**, the action-sequence generator (Sec. 3.3), conditioned on ``z = MLP([user ; Vec_hist ; item ;
  context])``. ``variant="iag"`` (implicit, the paper's tables): ``n`` position queries ``P0 = W tile(z)``,
  auxiliary (action, time) heads on ``P0`` fed back once into ``P1``, then ``O = CAM_gen(P1, z)`` and the
  final heads, all positions in parallel. ``variant="eag"`` (explicit): teacher-forced causal decoding
  of (action, time) tokens from ``start``; at inference, greedy autoregressive generation until the
  terminal (Leave / end).
* **Losses** (``train.py``): masked action cross-entropy over positions + 0.1 x time MSE + 0.01 x
  time-order hinge ``max(0, t_{i-1} - t_i)`` up to the terminal, and for IAG 0.1 x (CE + MSE) of the
  auxiliary heads. The weights are arguments. On a distilled memory (:mod:`recsys.distill`) every term is
  weighted by the sample's weight, and a BCE between the serving probabilities and the memory's soft labels
  is added (our addition: the generated sequence alone cannot carry a soft label).

Our choices where the code is silent or unusable (documented reconstruction): ``z`` also carries the
candidate item's and the context's embeddings (the code passes the item only through the CAM context);
items (candidate and history) are represented by their id and categorical side features through one
shared projection; the CAMs keep a residual of their input sequence (:mod:`.cam`);
the time embedding is a learned embedding of bucketized offsets (the code takes a precomputed 32-d
feature); the serving probability of action ``a`` is ``1 - prod_i (1 - alive_i p_i(a))``, with
``alive_i`` the probability that the sequence has not ended before position ``i``, and its predicted time
is the time at the position most likely to hold ``a``.

Shapes, for a batch of B samples, K chain actions, n = K + 1 positions, history entries H in total::

    history slots  [H, n, 2d] -> act CAM -> Seq [H, d];  [e ; Seq] -> padded [B, L, 2d] -> item CAM -> [B, d]
    z [B, 2d] -> P0 [B, n, d] -> CAM_gen -> action logits [B, n, K + 1] (actions, terminal), times [B, n]
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batches import ChainBatch
from recsys.data.chains import ChainSpec
from recsys.models.cam import CAM
from recsys.models.chain_module import ChainPrediction, ChainRankingModule, target_to_time, time_to_target
from recsys.models.distributed import global_mean, weighted_global_mean
from recsys.models.features import SparseFeatures
from recsys.models.jagged import padding_mask, to_padded

_DAY_EDGES = (0.5, 1.5, 2.5, 3.5, 5.5, 7.5, 10.5, 14.5, 21.5, 30.5, 45.5, 60.5, 90.5, 120.5)
_FRACTION_EDGES = tuple(round(0.1 * i, 1) for i in range(1, 21)) + (2.5, 3.0, 4.0)


class TimeEncoder(nn.Module):
    """A learned embedding per time bucket (log-like buckets for days, 0.1 steps for video fractions),
    with its own embedding for an unknown time."""

    def __init__(self, unit: str, dim: int) -> None:
        super().__init__()
        edges = _DAY_EDGES if unit == "days" else _FRACTION_EDGES
        self.register_buffer("edges", torch.tensor(edges), persistent=False)
        self.embedding = nn.Embedding(len(edges) + 2, dim)  # buckets, then "unknown"

    def forward(self, t: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        bucket = torch.bucketize(torch.nan_to_num(t), self.edges)
        return self.embedding(torch.where(known, bucket, torch.full_like(bucket, len(self.edges) + 1)))


class A2Gen(nn.Module):
    """The network (plain PyTorch around torchrec embeddings); :class:`A2GenModule` trains it."""

    def __init__(self, cardinalities: dict[str, int], spec: ChainSpec, *, dim: int = 32, heads: int = 4,
                 variant: Literal["iag", "eag"] = "iag", dropout: float = 0.1) -> None:
        super().__init__()
        self.spec, self.variant, self.dim = spec, variant, dim
        self.n = spec.num_slots
        self.classes = len(spec.actions) + 1  # actions, then the terminal
        self.features = SparseFeatures(cardinalities, dim)
        keys = list(cardinalities)
        self.user_keys = [k for k in keys if k == "user" or k.startswith(("user_", "onehot_", "is_", "follow_",
                                                                            "fans_", "friend_", "register_",
                                                                            "age_range", "gender"))]
        self.context_keys = [k for k in keys if k in ("tab", "hour")]
        self.item_keys = [k for k in keys if k not in (*self.user_keys, *self.context_keys, "tags")
                          and not k.startswith("history")]
        self.has_tags = "tags" in keys
        self.user_proj = nn.Linear(dim * len(self.user_keys), dim)
        # candidate and history items share one projection of [item ; side features]
        self.item_proj = nn.Linear(dim * len(self.item_keys), dim)
        self.tags_proj = nn.Linear(dim, dim, bias=False) if self.has_tags else None
        self.context_proj = nn.Linear(dim * len(self.context_keys), dim) if self.context_keys else None
        # tokens: 0 padding, 1..K actions, K + 1 terminal, K + 2 start (slots use ids 1..K + 1)
        self.action_emb = nn.Embedding(spec.vocab_size, dim)
        self.time_enc = TimeEncoder(spec.time_unit, dim)
        self.act_cam = CAM(2 * dim, dim, dim, heads, dropout=dropout)
        self.item_cam = CAM(2 * dim, dim, dim, heads, dropout=dropout)
        z_in = dim * (3 + bool(self.context_keys))
        self.z = nn.Sequential(nn.LayerNorm(z_in), nn.Linear(z_in, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                               nn.Linear(2 * dim, 2 * dim))
        self.gen_cam = CAM(dim, 2 * dim, dim, heads, dropout=dropout)
        self.action_head = nn.Linear(dim, self.classes)
        self.time_head = nn.Linear(dim, 1)
        self.positions = nn.Parameter(torch.randn(self.n, dim) * 0.02)
        if variant == "iag":
            self.p0 = nn.Linear(2 * dim, self.n * dim)
            self.aux_action_head = nn.Linear(dim, self.classes)
            self.aux_time_head = nn.Linear(dim, 1)
            self.feedback = nn.Linear(self.classes + 1, dim)

    # -- encoders ----------------------------------------------------------------------------------------
    def encode(self, batch: ChainBatch) -> torch.Tensor:
        """``z [B, 2d]``: the user, the history (HSE) and the candidate in context."""
        emb = self.features(batch.features, batch.relaxed)
        single = SparseFeatures.single
        user = self.user_proj(torch.cat([single(emb, k) for k in self.user_keys], -1))
        item = self.item_proj(torch.cat([single(emb, k) for k in self.item_keys], -1))
        if self.tags_proj is not None:
            item = item + self.tags_proj(SparseFeatures.pooled(emb, "tags"))
        parts = [user, self.hse(emb, batch, item), item]
        if self.context_proj is not None:
            parts.append(self.context_proj(torch.cat([single(emb, k) for k in self.context_keys], -1)))
        return self.z(torch.cat(parts, -1))

    def hse(self, emb: dict, batch: ChainBatch, target: torch.Tensor) -> torch.Tensor:
        """Hierarchical sequence encoder: ``Vec_hist [B, d]`` (zeros for an empty history)."""
        hist = emb["history"]
        history_keys = ["history" if k == "item" else f"history_{k}" for k in self.item_keys]
        e = self.item_proj(torch.cat([emb[k].values() for k in history_keys], -1))  # [H, d]
        seq = self.action_level(e, batch.history_flags, batch.history_times, batch.features["history"].values())
        lengths = hist.lengths()
        length = int(lengths.max()) if lengths.numel() and int(lengths.max()) > 0 else 1
        x = to_padded(torch.cat([e, seq], dim=-1), hist.offsets(), length)  # [B, L, 2d]
        mask = padding_mask(lengths, length)
        h = self.item_cam(x, target, mask=mask)
        return (h * mask[..., None]).sum(1)

    def action_level(self, e: torch.Tensor, flags: torch.Tensor, times: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``Seq_j [H, d]``: the action-level CAM over each history entry's slots, summed over slots.

        It depends on the entry alone (item, flags, times), so identical entries (the same history
        repeated for every candidate of a user at serving time) are computed once."""
        if e.shape[0] == 0:
            return e.new_zeros(0, self.dim)
        key = torch.cat([items.double()[:, None], flags.double(), times.double()], dim=1)  # exact for ids < 2**53
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)
        if unique.shape[0] == e.shape[0]:
            return self._action_level(e, flags, times)
        first = torch.empty(unique.shape[0], dtype=torch.long, device=e.device)
        first.scatter_(0, inverse, torch.arange(e.shape[0], device=e.device))
        return self._action_level(e[first], flags[first], times[first])[inverse]

    def _action_level(self, e: torch.Tensor, flags: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        slot_ids = torch.arange(1, self.n + 1, device=e.device)  # action ids 1..K, terminal K + 1
        slots = torch.cat([self.time_enc(times, flags > 0), self.action_emb(slot_ids).expand(e.shape[0], -1, -1)], -1)
        slots = slots * flags[..., None]  # slot = is_a * [timeEmb ; e_a]
        per_slot = self.act_cam(slots, e, mask=flags > 0)
        return (per_slot * flags[..., None]).sum(1)

    # -- generators --------------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor, batch: ChainBatch | None = None) -> dict[str, torch.Tensor]:
        """Action logits ``[B, n, K + 1]`` and times ``[B, n]`` (target scale), plus IAG's auxiliary heads.

        EAG with ``batch`` is teacher-forced on its labels; without, it decodes greedily."""
        if self.variant == "iag":
            p0 = self.p0(z).view(-1, self.n, self.dim) + self.positions
            aux_logits, aux_time = self.aux_action_head(p0), self.aux_time_head(p0).squeeze(-1)
            p1 = p0 + self.feedback(torch.cat([aux_logits.softmax(-1), aux_time[..., None]], -1))
            o = self.gen_cam(p1, z)
            return {"logits": self.action_head(o), "time": self.time_head(o).squeeze(-1),
                    "aux_logits": aux_logits, "aux_time": aux_time}
        if batch is not None:
            tokens, times = self._shifted_inputs(batch)
            o = self.gen_cam(self._token_inputs(tokens, times), z, causal=True)
            return {"logits": self.action_head(o), "time": self.time_head(o).squeeze(-1)}
        return self._decode(z)

    def _shifted_inputs(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        b = batch.tokens.shape[0]
        start = torch.full((b, 1), self.spec.start_token, dtype=torch.long, device=batch.tokens.device)
        tokens = torch.cat([start, batch.tokens[:, :-1]], dim=1)
        target_times = time_to_target(self.spec, batch.token_times)
        times = torch.cat([torch.zeros(b, 1, device=tokens.device), target_times[:, :-1]], dim=1)
        return tokens, times

    def _token_inputs(self, tokens: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        known = torch.isfinite(times) & (tokens > 0)
        return self.action_emb(tokens) + self.time_enc(target_to_time(self.spec, times), known) + self.positions[: tokens.shape[1]]

    def _decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        b = z.shape[0]
        tokens = torch.full((b, 1), self.spec.start_token, dtype=torch.long, device=z.device)
        times = torch.zeros(b, 1, device=z.device)
        logits, out_times = [], []
        for i in range(self.n):  # a loop over positions (n <= 6), never over samples
            o = self.gen_cam(self._token_inputs(tokens, times), z, causal=True)[:, -1]
            step_logits, step_time = self.action_head(o), self.time_head(o).squeeze(-1)
            logits.append(step_logits)
            out_times.append(step_time)
            nxt = step_logits.argmax(-1) + 1  # class c -> token c + 1
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            times = torch.cat([times, step_time[:, None]], dim=1)
        return {"logits": torch.stack(logits, 1), "time": torch.stack(out_times, 1)}

    def serve(self, out: dict[str, torch.Tensor]) -> ChainPrediction:
        """Per action: probability it occurs anywhere before the terminal, and its predicted time."""
        p = out["logits"].softmax(-1)  # [B, n, K + 1]
        k = self.classes - 1
        ended = p[..., k]
        alive = torch.cumprod(torch.cat([torch.ones_like(ended[:, :1]), 1 - ended[:, :-1]], dim=1), dim=1)
        reach = alive[..., None] * p  # P(class c at position i)
        probs = 1 - torch.prod(1 - reach[..., :k], dim=1)
        where = reach.argmax(dim=1)  # [B, K + 1] most likely position of each class
        times = torch.gather(out["time"], 1, where)
        return ChainPrediction(probs.clamp(0, 1), target_to_time(self.spec, times))


class A2GenModule(ChainRankingModule):
    """A2Gen trained with its losses (see :mod:`recsys.models.a2gen`), MuonRec by default."""

    def __init__(
        self,
        cardinalities: dict[str, int],
        spec: dict[str, Any],
        dim: int = 32,
        heads: int = 4,
        variant: Literal["iag", "eag"] = "iag",
        dropout: float = 0.1,
        ce_weight: float = 1.0,
        time_weight: float = 0.1,
        order_weight: float = 0.01,
        aux_weight: float = 0.1,
        optimizer: Literal["muonrec", "adamw"] = "muonrec",
        lr: float = 1e-3,
        muon_lr: float = 0.02,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int = 0,
    ) -> None:
        super().__init__(cardinalities, spec, optimizer=optimizer, lr=lr, muon_lr=muon_lr,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, total_steps=total_steps)
        self.save_hyperparameters()
        self.model = A2Gen(cardinalities, self.spec, dim=dim, heads=heads, variant=variant, dropout=dropout)

    def _sequence_losses(self, logits: torch.Tensor, time: torch.Tensor, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        valid = batch.tokens > 0
        w = batch.weights if batch.weights is not None else logits.new_ones(logits.shape[0])
        w = w[:, None].expand_as(batch.tokens)
        ce = F.cross_entropy(logits[valid], batch.tokens[valid] - 1, reduction="none")
        ce = global_mean((ce * w[valid]).sum(), w[valid].sum())  # means over the global batch (also under DDP)
        known = valid & torch.isfinite(batch.token_times)
        target = time_to_target(self.spec, torch.nan_to_num(batch.token_times))
        mse = global_mean(((time[known] - target[known]) ** 2 * w[known]).sum() + time.sum() * 0.0, w[known].sum())
        return ce, mse

    def loss(self, batch: ChainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        out = self.model.generate(self.model.encode(batch), batch)
        ce, mse = self._sequence_losses(out["logits"], out["time"], batch)
        valid = batch.tokens > 0
        pairs = valid[:, 1:] & valid[:, :-1]  # consecutive positions up to the terminal
        order = global_mean(F.relu(out["time"][:, :-1] - out["time"][:, 1:])[pairs].sum() + ce * 0.0, pairs.sum())
        total = hp.ce_weight * ce + hp.time_weight * mse + hp.order_weight * order
        parts = {"ce": ce.detach(), "mse": mse.detach(), "order": order.detach()}
        if "aux_logits" in out:
            aux_ce, aux_mse = self._sequence_losses(out["aux_logits"], out["aux_time"], batch)
            total = total + hp.aux_weight * (aux_ce + aux_mse)
            parts.update(aux_ce=aux_ce.detach(), aux_mse=aux_mse.detach())
        if batch.soft_labels is not None:  # a distilled memory: match its per-action soft labels too
            probs = self.model.serve(out).probs.clamp(1e-6, 1 - 1e-6)
            soft = weighted_global_mean(F.binary_cross_entropy(probs, batch.soft_labels, reduction="none").mean(1),
                                        batch.weights)
            total = total + soft
            parts["soft_bce"] = soft.detach()
        return total, parts

    def predict(self, batch: ChainBatch) -> ChainPrediction:
        return self.model.serve(self.model.generate(self.model.encode(batch)))
