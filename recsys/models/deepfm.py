"""DeepFM baseline for action-chain ranking: a factorization machine and an MLP over shared embeddings.

Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017, Sec. 2.1
(Eq. 1-4): the FM component and the deep component read the *same* field embeddings ``v_1 .. v_n``, and the
prediction adds their outputs::

    y = sigmoid(y_FM + y_DNN)                                         (Eq. 1)
    y_FM = <w, x> + sum_{i<j} <v_i, v_j>                              (Eq. 2)
    y_DNN = MLP([v_1, ..., v_n])                                      (Eq. 3-4)

The pairwise sum is computed in ``O(n d)`` with Rendle's identity (FM, ICDM 2010, Eq. 5): the
bi-interaction vector ``b = 1/2 ((sum_i v_i)^2 - sum_i v_i^2)`` (element-wise, ``[B, d]``) sums to
``sum_{i<j} <v_i, v_j>``. What a pairwise dot product buys over concatenation: a preference that is the
match of two fields (this user's taste x this item's topic, or x a fixed text vector of the item, see
:mod:`recsys.models.pretrained`) is one term of ``y_FM`` from the start, where an MLP over the concatenated
fields has to learn the product.

Our adaptation to the toolkit's multi-action chains (not in the paper, which has one click label):

* **Fields** are :meth:`~recsys.models.mmoe.ChainInput.fields`: every single-valued key, the pooled tags,
  each pretrained table projected to ``dim``, the mean of the history's item embeddings. The history's
  other numbers (mean action slots, log-length) go to the first-order term and the MLP only.
* **First order** ``<w, x>``: one linear map of the concatenated input (embeddings and history numbers) to
  the ``K`` logits; over a one-hot field this is the paper's per-feature weight, learned through the
  field's embedding.
* **Per-action FM**: action ``k`` weighs the bi-interaction vector by its own ``u_k`` (``[d]``, initialised
  to ones, where ``<u_k, b>`` is exactly Eq. 2's pairwise sum): the actions share embeddings, and a purchase
  may weigh the dimensions of a match differently from a click.
* **Deep component** ``MLP(dims)`` with two linear heads: ``K`` logits (added to the FM's) and ``K + 1``
  times; the objective is :class:`~recsys.models.mmoe.ChainHeadsModule`'s, as for the other baselines.

Shapes, Tmall (``K = 3``, ``S = 4``, 7 single-valued keys) with ``dim = 16``, a batch of ``B = 64``::

    fields    7 keys + history mean              -> v [64, 8, 16];  dense [64, 9]
    x         concat(v, dense)                   -> [64, 137]
    FM        b = ((sum v)^2 - sum v^2) / 2      -> [64, 16];  logits_FM = b @ U^T [64, 3]
    first     Linear(137 -> 3)                   -> [64, 3]
    deep      MLP(137 -> 200 -> 80)              -> logits [64, 3] + times [64, 4]
    output    logits = first + FM + deep         -> [64, 3]
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from recsys.data.batches import ChainBatch
from recsys.models.mlp import MLP, Activation
from recsys.models.mmoe import ChainHeadsModule, ChainInput


def bi_interaction(fields: torch.Tensor) -> torch.Tensor:
    """``[B, n, d]`` field vectors -> ``[B, d]`` with ``sum(-1) = sum_{i<j} <v_i, v_j>`` (Rendle's identity).

    >>> v = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    >>> bi_interaction(v).sum(-1).item()   # <v1,v2> + <v1,v3> + <v2,v3> = 11 + 17 + 39
    67.0
    """
    return 0.5 * (fields.sum(1).square() - fields.square().sum(1))


class DeepFM(ChainHeadsModule):
    """DeepFM over the baselines' shared input (see the module docstring).

    Args:
        cardinalities, spec: from the data module (``feature_cardinalities``, ``spec_dict``).
        dim: embedding width of every field (the FM's ``d``).
        mlp_dims: hidden widths of the deep component.
        activation, dropout: of the deep component's hidden layers.
        time_weight: weight of the timing MSE in the loss.
        optimizer, lr, muon_lr, weight_decay, warmup_steps, total_steps: see
            :class:`~recsys.models.chain_module.ChainRankingModule`.
        pretrained: a safetensors file of fixed ``item`` / ``user`` vectors (text-encoder layers, MARC
            codes; :mod:`recsys.models.pretrained`), each an extra FM field; ``None``: ids only.
        pretrained_bottleneck: a learned linear map of the vectors to this width first (the layer probe).
    """

    def __init__(
        self,
        cardinalities: dict[str, int],
        spec: dict[str, Any],
        dim: int = 16,
        mlp_dims: tuple[int, ...] = (200, 80),
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
        k = len(self.spec.actions)
        self.inputs = ChainInput(cardinalities, self.spec, dim, pretrained=pretrained,
                                 pretrained_bottleneck=pretrained_bottleneck)
        self.first_order = nn.Linear(self.inputs.out_dim, k)
        # u_1..u_K flat (1-D: AdamW's family under MuonRec, not Muon's); ones = the paper's plain pairwise sum
        self.fm_weights = nn.Parameter(torch.ones(k * dim))
        self.deep = MLP(self.inputs.out_dim, mlp_dims, activation=activation, dropout=dropout)
        self.action_head = nn.Linear(self.deep.out_dim, k)
        self.time_head = nn.Linear(self.deep.out_dim, k + 1)

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        fields, dense, _ = self.inputs.fields(batch)
        x = torch.cat(fields + dense, dim=-1)
        pairs = bi_interaction(torch.stack(fields, dim=1))  # [B, d]
        fm = pairs @ self.fm_weights.view(-1, pairs.shape[-1]).T  # [B, d] @ [d, K] -> [B, K]
        hidden = self.deep(x)
        return self.first_order(x) + fm + self.action_head(hidden), self.time_head(hidden)

    def action_biases(self) -> list[tuple[torch.Tensor, int]]:
        return [(self.action_head.bias, k) for k in range(self.action_head.out_features)]

    @torch.no_grad()
    def init_action_prior(self, rates: torch.Tensor) -> None:
        self.first_order.bias.zero_()  # two biases add up in the logit: the prior goes in one of them
        super().init_action_prior(rates)
