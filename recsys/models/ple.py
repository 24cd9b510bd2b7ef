"""PLE baseline for action-chain ranking: stacked Customized Gate Control (CGC) extraction layers.

Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations", RecSys 2020.

* **CGC** (Sec. 4.2, Eqs. 1-3): each task ``k`` owns ``m_k`` experts and all tasks share ``m_s`` experts.
  Task ``k``'s gate mixes only its own and the shared experts::

      w^k(x)  = softmax(W_k x)                              (Eq. 2, W_k in R^{(m_k + m_s) x d})
      S^k(x)  = [E_k,1 .. E_k,m_k, E_s,1 .. E_s,m_s]         (Eq. 3)
      g^k(x)  = w^k(x)^T S^k(x)                              (Eq. 1), then y^k = t^k(g^k(x))

* **PLE** (Sec. 4.3, Eqs. 4-6): ``levels`` CGC layers stacked. At level ``j`` the experts of task ``k``
  read task ``k``'s output of level ``j - 1`` and the shared experts read the shared output of level
  ``j - 1`` (level 1: all read ``x``); task gates mix as in CGC, from task ``k``'s input. Every level but
  the last also has a **shared gate** over *all* experts of the level (every task's and the shared
  ones), from the shared input, whose mixture is the next level's shared input. The towers read the last
  level's task outputs.

Input, tasks and objective are the baselines' shared ones (:mod:`recsys.models.mmoe`): ``T = K + 1`` tasks,
tower ``k < K`` outputs ``[logit_k, time_k]``, the last tower the terminal's time.

Shapes, Tmall (``K = 3``, ``T = 4``, input 265 wide, see :mod:`recsys.models.mmoe`) with the defaults
(2 levels, 1 expert per task, 2 shared, experts 128 -> 64), ``B = 64``::

    level 1: task experts 4 x MLP(265 -> 128 -> 64), shared 2 x MLP(265 -> 128 -> 64)
             task gates 4 x softmax(Linear(265 -> 3)), shared gate softmax(Linear(265 -> 6))
             -> task outputs [64, 4, 64], shared output [64, 64]
    level 2: the same with inputs 64 wide, no shared gate   -> task outputs [64, 4, 64]
    towers:  3 x MLP(64 -> 32 -> 2), 1 x MLP(64 -> 32 -> 1)  -> logits [64, 3], times [64, 4]
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from recsys.data.batches import ChainBatch
from recsys.models.mlp import MLP, Activation
from recsys.models.mmoe import ChainHeadsModule, ChainInput


class CGCLayer(nn.Module):
    """One extraction level: ``(task inputs [B, T, d], shared input [B, d])`` ->
    ``(task outputs [B, T, h], shared output [B, h] or None)`` (``None`` when ``shared_gate=False``)."""

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        task_experts: int,
        shared_experts: int,
        expert_dims: tuple[int, ...],
        *,
        shared_gate: bool,
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tasks, self.task_experts = num_tasks, task_experts

        def expert() -> MLP:
            return MLP(in_dim, expert_dims, activation=activation, dropout=dropout)

        # task t's experts are entries t * task_experts ... (t + 1) * task_experts - 1
        self.specific = nn.ModuleList(expert() for _ in range(num_tasks * task_experts))
        self.shared = nn.ModuleList(expert() for _ in range(shared_experts))
        self.task_gates = nn.ModuleList(
            nn.Linear(in_dim, task_experts + shared_experts, bias=False) for _ in range(num_tasks))
        self.shared_gate = (
            nn.Linear(in_dim, num_tasks * task_experts + shared_experts, bias=False) if shared_gate else None)
        self.out_dim = expert_dims[-1]

    def forward(self, tasks: torch.Tensor, shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, m = tasks.shape[0], self.num_tasks, self.task_experts
        specific = torch.stack(
            [e(tasks[:, i // m]) for i, e in enumerate(self.specific)], dim=1).view(b, t, m, -1)  # [B, T, m, h]
        common = (torch.stack([e(shared) for e in self.shared], dim=1) if len(self.shared)
                  else specific.new_zeros(b, 0, specific.shape[-1]))  # [B, m_s, h]
        candidates = torch.cat([specific, common.unsqueeze(1).expand(b, t, *common.shape[1:])], dim=2)
        weights = torch.stack([g(tasks[:, i]) for i, g in enumerate(self.task_gates)], dim=1).softmax(-1)
        task_out = (weights.unsqueeze(-1) * candidates).sum(2)  # [B, T, h]   (Eq. 1 / Eq. 4)
        if self.shared_gate is None:
            return task_out, None
        everything = torch.cat([specific.flatten(1, 2), common], dim=1)  # [B, T m + m_s, h]
        shared_out = (self.shared_gate(shared).softmax(-1).unsqueeze(-1) * everything).sum(1)
        return task_out, shared_out


class PLE(ChainHeadsModule):
    """Progressive Layered Extraction over the shared chain input (see the module docstring).

    Args:
        cardinalities, spec: from the data module (``feature_cardinalities``, ``spec_dict``).
        dim: embedding width of every sparse feature.
        levels: extraction levels (CGC layers); 1 is plain CGC.
        task_experts: experts per task and level (``m_k``).
        shared_experts: shared experts per level (``m_s``).
        expert_dims: hidden widths of each expert MLP (ReLU), the same at every level; the last is the
            expert output and the next level's input width.
        tower_dims: hidden widths of each task tower before its linear output.
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
        levels: int = 2,
        task_experts: int = 1,
        shared_experts: int = 2,
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
        if levels < 1 or task_experts < 1 or shared_experts < 0 or not expert_dims:
            raise ValueError("PLE needs levels >= 1, task_experts >= 1, shared_experts >= 0, expert_dims")
        k = len(self.spec.actions)
        self.num_tasks = k + 1
        self.inputs = ChainInput(cardinalities, self.spec, dim, pretrained=pretrained,
                                 pretrained_bottleneck=pretrained_bottleneck)
        widths = [self.inputs.out_dim] + [expert_dims[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            CGCLayer(w, self.num_tasks, task_experts, shared_experts, expert_dims,
                     shared_gate=j < levels - 1, activation=activation, dropout=dropout)
            for j, w in enumerate(widths))
        self.towers = nn.ModuleList(
            MLP(expert_dims[-1], tower_dims, out_dim=2 if t < k else 1, activation=activation, dropout=dropout)
            for t in range(self.num_tasks))

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.inputs(batch)
        tasks = x.unsqueeze(1).expand(-1, self.num_tasks, -1)
        shared = x
        for level in self.levels:
            tasks, shared = level(tasks, shared)
        outs = [tower(tasks[:, t]) for t, tower in enumerate(self.towers)]
        action_outs = torch.stack(outs[:-1], dim=1)  # [B, K, 2]
        return action_outs[..., 0], torch.cat([action_outs[..., 1], outs[-1]], dim=1)

    def action_biases(self) -> list[tuple[torch.Tensor, int]]:
        return [(tower[-1].bias, 0) for tower in self.towers[:-1]]  # tower k < K: [logit_k, time_k]
