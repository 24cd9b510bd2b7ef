"""DIN-style target-attention baseline for action-chain ranking.

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018:

* **Local activation unit** (Sec. 4.3, Eq. 3; Fig. 2): the user's interest *in the candidate* is a
  weighted sum of the history embeddings, each weight computed by a small MLP ``a(.)`` from the history
  entry and the candidate::

      v_U(A) = sum_j a(e_j, v_A) e_j = sum_j w_j e_j

  ``a`` sees ``[h_j, t, e_j - t, e_j * t]`` (the usual form of the paper's "out product" input), with
  ``e_j`` the history item's representation, ``t`` the candidate's (id plus categorical side-feature
  embeddings, summed, from the shared tables: :func:`~recsys.models.features.item_representation`)
  and ``h_j = [e_j, P s_j]``: the item representation with the entry's ``2 S`` action-slot
  numbers ``s_j`` (flags and ``time_to_target`` times, :func:`~recsys.models.mmoe.slot_features`) projected
  by a small linear map ``P`` and concatenated, so that *what the user did* with an earlier item (only
  looked, favourited, bought; liked, watched to the end) both steers the weight and enters the pooled
  interest. Difference and product use the item part only, which lives in the candidate's space.
* **No softmax** on the weights (Sec. 4.3: "normalization with softmax on the output of a(.) is
  abandoned", to keep the intensity of the user's interests): ``w_j`` is the unit's raw linear output,
  zeroed at padding, and the pooled vector's scale grows with how much of the history is relevant.
* **MLP** (Fig. 2): the concatenation of every single-valued feature embedding and pooled tags (the
  baselines' shared input without its history mean, :class:`~recsys.models.mmoe.ChainInput`) and the
  interest ``v_U`` goes through ``200 -> 80`` PReLU layers (Sec. 4.4 and Fig. 2; Dice, the paper's
  data-adaptive PReLU, needs batch statistics over padded sequences and is left out), then two linear
  heads: ``K`` action logits and ``K + 1`` times (the objective of :class:`~recsys.models.mmoe.ChainHeadsModule`).

Shapes, Tmall (``K = 3``, ``S = 4``, 7 single-valued keys) with the defaults ``dim = 32``,
``slot_dim = 8``, a batch of ``B = 64`` whose longest history has ``L = 50`` entries::

    history   item embeddings [N, 32] ++ P(slots [N, 8]) [N, 8]  -> padded h [64, 50, 40]
    candidate t [64, 32], broadcast                               -> [64, 50, 32]
    unit      MLP([h, t, e - t, e * t] [64, 50, 136] -> 36 -> 1)  -> weights [64, 50] (0 at padding)
    interest  sum_j w_j h_j                                       -> [64, 40]
    MLP       [7 x 32 features ++ interest] [64, 264] -> 200 -> 80
    heads     -> logits [64, 3], times [64, 4]
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from recsys.data.batches import ChainBatch
from recsys.models.features import item_representation
from recsys.models.jagged import padding_mask, to_padded
from recsys.models.mlp import MLP, Activation
from recsys.models.mmoe import ChainHeadsModule, ChainInput, slot_features


class DIN(ChainHeadsModule):
    """Deep Interest Network with action-aware history entries (see the module docstring).

    Args:
        cardinalities, spec: from the data module (``feature_cardinalities``, ``spec_dict``).
        dim: embedding width of every sparse feature.
        slot_dim: width of the projected action slots appended to each history entry.
        attention_dims: hidden widths of the local activation unit (Fig. 2: one layer of 36).
        mlp_dims: hidden widths of the MLP after pooling (Fig. 2: 200, 80).
        activation: of the unit and the MLP (``"prelu"``, as in the paper).
        dropout: after every hidden layer of the MLP.
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
        slot_dim: int = 8,
        attention_dims: tuple[int, ...] = (36,),
        mlp_dims: tuple[int, ...] = (200, 80),
        activation: Activation = "prelu",
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
        k, s = len(self.spec.actions), self.spec.num_slots
        self.dim = dim
        self.inputs = ChainInput(cardinalities, self.spec, dim, history_summary=False, pretrained=pretrained,
                                 pretrained_bottleneck=pretrained_bottleneck)
        self.slot_proj = nn.Linear(2 * s, slot_dim)
        entry = dim + slot_dim
        self.attention = MLP(entry + 3 * dim, attention_dims, out_dim=1, activation=activation)
        self.mlp = MLP(self.inputs.out_dim + entry, mlp_dims, activation=activation, dropout=dropout)
        self.action_head = nn.Linear(self.mlp.out_dim, k)
        self.time_head = nn.Linear(self.mlp.out_dim, k + 1)

    def interest(self, batch: ChainBatch, embedded: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled interest ``[B, dim + slot_dim]`` and the activation weights ``[B, L]`` (0 at padding,
        ``L`` the batch's longest history, at least 1)."""
        history = embedded["history"]
        lengths = history.lengths()
        slots = self.slot_proj(slot_features(self.spec, batch.history_flags, batch.history_times))
        entries = torch.cat([item_representation(embedded, history=True), slots], dim=-1)  # [N, dim + slot_dim]
        max_len = max(int(lengths.max()) if lengths.numel() else 0, 1)
        h = to_padded(entries, history.offsets(), max_len)  # [B, L, dim + slot_dim]
        e = h[..., : self.dim]
        t = item_representation(embedded).unsqueeze(1).expand_as(e)
        scores = self.attention(torch.cat([h, t, e - t, e * t], dim=-1)).squeeze(-1)  # [B, L]
        weights = scores.masked_fill(~padding_mask(lengths, max_len), 0.0)
        return (weights.unsqueeze(-1) * h).sum(1), weights

    def forward(self, batch: ChainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        fields, embedded = self.inputs(batch)
        pooled, _ = self.interest(batch, embedded)
        hidden = self.mlp(torch.cat([fields, pooled], dim=-1))
        return self.action_head(hidden), self.time_head(hidden)

    def action_biases(self) -> list[tuple[torch.Tensor, int]]:
        return [(self.action_head.bias, k) for k in range(self.action_head.out_features)]
