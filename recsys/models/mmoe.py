"""MMoE baseline for action-chain ranking, plus the input encoder and objective shared by the baselines.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD
2018, Sec. 4.2: ``E`` expert networks ``f_i`` share the input ``x``; task ``k`` mixes them with its own
softmax gate and feeds the mixture to its tower ``h^k``::

    g^k(x) = softmax(W_gk x)                    (Eq. 6, W_gk in R^{E x d}, no bias)
    f^k(x) = sum_i g^k(x)_i f_i(x)              (Eq. 5)
    y_k    = h^k(f^k(x))

A2Gen (Li et al., SIGIR 2026, arXiv 2604.25834) compares against MMoE and PLE on the same chain data; this
file and :mod:`recsys.models.ple` / :mod:`recsys.models.din` give the three baselines one input and one
objective so that they differ only in the network in between:

**Input** (:class:`ChainInput`): the concatenation of

* the embedding of every single-valued feature of the batch's KJT, in the data module's key order: user,
  item, the item's side fields, the user's fields, the context (Tmall: 7 keys; KuaiRand: 35);
* the mean of the item's ``tags`` embeddings (where the dataset has tags);
* the history summary: mean of the previous chains' item embeddings (the ``item`` table, shared), the
  mean of their action slots (``history_flags`` and ``time_to_target(history_times)``, ``2 S`` numbers:
  how often, and how late, each action happened in the user's earlier chains) and ``log1p`` of the
  history length (a mean hides how many chains there were).

**Tasks** (one gate and one tower each, ``T = K + 1``): tower ``k < K`` outputs ``[logit_k, time_k]``
(whether action ``k`` occurs, and when: the classification and regression of one action share a tower,
since both describe the same action); the last tower outputs the terminal's time (``end`` / ``leave``).
Times are regressed on :func:`~recsys.models.chain_module.time_to_target`'s scale (log1p days for Tmall,
video fraction for KuaiRand).

**Objective** (:class:`ChainHeadsModule`): binary cross-entropy with logits averaged over the batch and
the ``K`` actions (on a distilled memory: against its soft labels, each sample weighted by its weight), plus ``time_weight`` (0.1) x the MSE of the time predictions over the slots whose time
is known (``batch.times`` finite and ``batch.occurred`` true; Tmall: the actions that occurred; KuaiRand:
Leave). ``predict`` returns ``sigmoid(logits)`` and the times in data units
(:func:`~recsys.models.chain_module.target_to_time`).

Shapes, Tmall (``K = 3`` actions, ``S = 4`` slots, 7 single-valued keys) with ``dim = 32``, a batch of
``B = 64`` whose histories hold ``N = 900`` chains in all::

    single features 7 x [64, 32] + history mean [64, 32] + slots [64, 8] + log-length [64, 1]
        -> x [64, 265]
    experts  4 x MLP(265 -> 128 -> 64)           -> [64, 4, 64]
    gates    4 x softmax(Linear(265 -> 4))       -> [64, 4 tasks, 4 experts]
    mixtures gates @ experts                     -> [64, 4 tasks, 64]
    towers   3 x MLP(64 -> 32 -> 2), 1 x MLP(64 -> 32 -> 1)
        -> logits [64, 3], times [64, 4]
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batches import ChainBatch
from recsys.data.chains import ChainSpec
from recsys.models.chain_module import ChainPrediction, ChainRankingModule, target_to_time, time_to_target
from recsys.models.distributed import global_mean, weighted_global_mean
from recsys.models.features import SparseFeatures, item_representation
from recsys.models.mlp import MLP, Activation
from recsys.models.pretrained import PretrainedFeatures, load_vectors

JAGGED_KEYS = ("tags", "history")


def segment_mean(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[sum(lengths), D]`` jagged rows -> ``[B, D]`` per-row means (zeros for an empty row), vectorised.

    >>> segment_mean(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([2, 0, 1])).flatten().tolist()
    [2.0, 0.0, 5.0]
    """
    lengths = lengths.to(torch.long)
    rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=values.device), lengths)
    sums = values.new_zeros(lengths.shape[0], values.shape[-1]).index_add_(0, rows, values)
    return sums / lengths.clamp(min=1).unsqueeze(-1).to(sums.dtype)


def slot_features(spec: ChainSpec, flags: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """History action slots ``[N, S]`` + ``[N, S]`` -> ``[N, 2 S]``: the flags, then the times on the
    learning scale (``log1p`` days for Tmall; hidden or unknown times are 0 in the batch and stay 0)."""
    return torch.cat([flags, time_to_target(spec, times)], dim=-1)


class ChainInput(nn.Module):
    """The baselines' shared input (see the module docstring): embeddings of the single-valued keys,
    pooled tags, and (``history_summary=True``) the mean-pooled history with its mean action slots.

    ``forward(batch)`` returns ``(x [B, out_dim], embedded)``; ``embedded`` holds every key's
    ``JaggedTensor`` (DIN reads the history embeddings from it).
    """

    def __init__(
        self, cardinalities: dict[str, int], spec: ChainSpec, dim: int, *, history_summary: bool = True,
        pretrained: str | None = None, pretrained_bottleneck: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.features = SparseFeatures(cardinalities, dim)
        self.single_keys = [k for k in cardinalities if k not in JAGGED_KEYS and not k.startswith("history_")]
        self.has_tags = "tags" in cardinalities
        self.history_summary = history_summary
        self.out_dim = dim * (len(self.single_keys) + int(self.has_tags))
        self.pretrained = None
        if pretrained:  # fixed item / user vectors (e.g. MARC codes), see recsys.models.pretrained
            self.pretrained = PretrainedFeatures(load_vectors(pretrained, cardinalities), dim, pretrained_bottleneck)
            self.out_dim += self.pretrained.out_dim
        if history_summary:
            self.out_dim += dim + 2 * spec.num_slots + 1

    def fields(self, batch: ChainBatch) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
        """The input before concatenation: ``(fields, dense, embedded)``. ``fields`` are the ``[B, dim]``
        vectors of one field each (every single-valued key, pooled tags, each pretrained table, the history
        mean), what a factorization machine crosses; ``dense`` the history's other numbers (``[B, 2 S]``
        mean action slots and ``[B, 1]`` log-length; empty without ``history_summary``)."""
        emb = self.features(batch.features, batch.relaxed)
        fields = [SparseFeatures.single(emb, k) for k in self.single_keys]
        dense: list[torch.Tensor] = []
        if self.has_tags:
            fields.append(SparseFeatures.pooled(emb, "tags"))
        if self.pretrained is not None:
            fields += self.pretrained(batch.features)
        if self.history_summary:
            lengths = emb["history"].lengths()
            slots = slot_features(self.spec, batch.history_flags, batch.history_times)
            fields.append(segment_mean(item_representation(emb, history=True), lengths))
            dense += [segment_mean(slots, lengths), torch.log1p(lengths.to(slots.dtype)).unsqueeze(-1)]
        return fields, dense, emb

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, dict]:
        fields, dense, emb = self.fields(batch)
        return torch.cat(fields + dense, dim=-1), emb


class ChainHeadsModule(ChainRankingModule):
    """A chain-ranking module whose ``forward(batch)`` returns ``(logits [B, K], time targets [B, K + 1])``;
    implements the shared objective and prediction (see the module docstring). Subclasses save a
    ``time_weight`` hyper-parameter."""

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def action_biases(self) -> list[tuple[torch.Tensor, int]]:
        """Where each action's logit gets its output bias: ``K`` pairs ``(bias parameter, index)``."""
        raise NotImplementedError

    @torch.no_grad()
    def init_action_prior(self, rates: torch.Tensor) -> None:
        """Set every action's output bias to the log-odds of its label rate ``rates [K]``: the focal-loss
        paper's prior initialization (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, Sec. 3.3
        and Sec. 4.1 "Initialization"). From a zero bias a model's first BCE steps go to learning the rates; a
        run of a few dozen steps (a 1% memory of the 600-user stream: 24) can end before it ranks anything,
        which starting at the rates avoids (BENCHMARKS.md, "DIET", seventeenth stop). Each logit moves by
        the same amount on every sample; the times do not move.
        """
        rates = rates.clamp(1e-6, 1 - 1e-6)
        for (bias, i), prior in zip(self.action_biases(), torch.log(rates / (1 - rates)), strict=True):
            bias[i] = prior

    def loss(self, batch: ChainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, time_y = self(batch)
        k = len(self.spec.actions)
        per_action = F.binary_cross_entropy_with_logits(logits, batch.action_targets(), reduction="none")
        bce = weighted_global_mean(per_action.mean(1), batch.weights)  # global-batch means, also under DDP
        known = torch.isfinite(batch.times) & batch.occurred.bool()
        target = time_to_target(self.spec, torch.nan_to_num(batch.times, nan=0.0, posinf=0.0, neginf=0.0))
        squared = torch.where(known, (time_y - target) ** 2, torch.zeros_like(time_y))
        w = batch.weights if batch.weights is not None else torch.ones_like(squared[:, 0])
        mse = global_mean((squared.sum(1) * w).sum(), (known.sum(1) * w).sum())
        return bce + self.hparams.time_weight * mse, {"bce": bce.detach(), "mse": mse.detach()}

    def predict(self, batch: ChainBatch) -> ChainPrediction:
        logits, time_y = self(batch)
        return ChainPrediction(probs=torch.sigmoid(logits), times=target_to_time(self.spec, time_y))


class MMoE(ChainHeadsModule):
    """Multi-gate Mixture-of-Experts over :class:`ChainInput` (see the module docstring).

    Args:
        cardinalities, spec: from the data module (``feature_cardinalities``, ``spec_dict``).
        dim: embedding width of every sparse feature.
        num_experts: shared experts ``E``.
        expert_dims: hidden widths of each expert MLP (ReLU); the last one is the expert output.
        tower_dims: hidden widths of each task tower (ReLU) before its linear output.
        dropout: after every hidden layer of experts and towers.
        time_weight: weight of the timing MSE in the loss.
        optimizer, lr, muon_lr, weight_decay, warmup_steps, total_steps: see
            :class:`~recsys.models.chain_module.ChainRankingModule`.
        pretrained: a safetensors file of fixed ``item`` / ``user`` vectors (text-encoder layers, MARC
            codes; :mod:`recsys.models.pretrained`) read as extra features; ``None``: ids only.
        pretrained_bottleneck: a learned linear map of the vectors to this width first (the layer probe).
    """

    def __init__(
        self,
        cardinalities: dict[str, int],
        spec: dict[str, Any],
        dim: int = 32,
        num_experts: int = 4,
        expert_dims: tuple[int, ...] = (128, 64),
        tower_dims: tuple[int, ...] = (32,),
        activation: Activation = "relu",
        dropout: float = 0.0,
        time_weight: float = 0.1,
        optimizer: Literal["muonrec", "adamw"] = "muonrec",
        lr: float = 1e-3,
        muon_lr: float = 0.02,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int = 0,
        pretrained: str | None = None,
        pretrained_bottleneck: int | None = None,
    ) -> None:
        super().__init__(cardinalities, spec, optimizer=optimizer, lr=lr, muon_lr=muon_lr,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, total_steps=total_steps)
        self.save_hyperparameters()
        if num_experts < 1 or not expert_dims:
            raise ValueError("MMoE needs at least one expert with at least one layer")
        k = len(self.spec.actions)
        self.inputs = ChainInput(cardinalities, self.spec, dim, pretrained=pretrained,
                                 pretrained_bottleneck=pretrained_bottleneck)
        in_dim = self.inputs.out_dim
        self.experts = nn.ModuleList(
            MLP(in_dim, expert_dims, activation=activation, dropout=dropout) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, num_experts, bias=False) for _ in range(k + 1))
        width = expert_dims[-1]
        self.towers = nn.ModuleList(
            MLP(width, tower_dims, out_dim=2 if t < k else 1, activation=activation, dropout=dropout)
            for t in range(k + 1))

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.inputs(batch)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, h]
        gates = torch.stack([gate(x) for gate in self.gates], dim=1).softmax(-1)  # [B, T, E]
        mixed = gates @ experts  # [B, T, h]
        outs = [tower(mixed[:, t]) for t, tower in enumerate(self.towers)]
        action_outs = torch.stack(outs[:-1], dim=1)  # [B, K, 2]
        logits = action_outs[..., 0]
        times = torch.cat([action_outs[..., 1], outs[-1]], dim=1)  # [B, K + 1]
        return logits, times

    def action_biases(self) -> list[tuple[torch.Tensor, int]]:
        return [(tower[-1].bias, 0) for tower in self.towers[:-1]]  # tower k < K: [logit_k, time_k]
