"""A2Gen as an exportable program: score one user's candidates on padded tensors.

Training reads a KeyedJaggedTensor per batch; serving scores *one user* against ``C`` candidates, so
:class:`A2GenScore` re-expresses :meth:`A2Gen.encode` + :meth:`A2Gen.generate` + :meth:`A2Gen.serve` with
the same modules and weights (a test checks it gives the training model's numbers), computing the user's
history once and sharing it across the candidates:

* ``ids``: one ``[C]`` id tensor per single-valued key (user and context keys repeat one value; the
  runtime expands them), e.g. ``{"user": [7, 7, 7], "item": [12, 40, 3], "cat": [2, 2, 9], ...}``;
* ``tags [C, T]`` with ``tag_lengths [C]`` (KuaiRand; 0 = padding);
* ``history``: ``[L]`` ids per history key (``history``, ``history_<field>``), oldest first, with
  ``history_flags`` / ``history_times`` ``[L, S]`` (each entry's action slots) and ``history_length``
  ``[1]`` (``L`` may be padded; an empty history is ``L = 1`` with length 0).

Outputs ``probs [C, K]`` (probability that each action occurs) and ``times [C, K + 1]`` (its predicted time
and the terminal's, in data units), as :class:`ChainPrediction`. The action level runs on every history
entry (no de-duplication: ``torch.unique`` has data-dependent shapes).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.a2gen import A2Gen


def feature_tables(model: A2Gen) -> dict[str, str]:
    """Feature key -> the name of the table it reads."""
    return {f: cfg.name for cfg in model.features.collection.embedding_configs() for f in cfg.feature_names}


class A2GenScore(nn.Module):
    def __init__(self, model: A2Gen) -> None:
        super().__init__()
        self.model = model
        self.tables = feature_tables(model)
        self.single_keys = [*model.user_keys, *model.item_keys, *model.context_keys]
        self.history_keys = ["history" if k == "item" else f"history_{k}" for k in model.item_keys]

    def _emb(self, key: str, ids: torch.Tensor) -> torch.Tensor:
        return self.model.features.collection.embeddings[self.tables[key]](ids)

    def forward(self, ids: dict[str, torch.Tensor], tags: torch.Tensor, tag_lengths: torch.Tensor,
                history: dict[str, torch.Tensor], history_flags: torch.Tensor, history_times: torch.Tensor,
                history_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        user = m.user_proj(torch.cat([self._emb(k, ids[k]) for k in m.user_keys], -1))  # [C, d]
        item = m.item_proj(torch.cat([self._emb(k, ids[k]) for k in m.item_keys], -1))
        if m.tags_proj is not None:
            keep = (torch.arange(tags.shape[1], device=tags.device) < tag_lengths[:, None]).to(item.dtype)
            pooled = (self._emb("tags", tags) * keep[..., None]).sum(1) / tag_lengths.clamp(min=1)[:, None].to(item.dtype)
            item = item + m.tags_proj(pooled)
        # the history, once for the user: entries [L, d] and their action-level summaries [L, d]
        e = m.item_proj(torch.cat([self._emb(k, history[k]) for k in self.history_keys], -1))
        seq = m._action_level(e, history_flags, history_times)
        c, length = item.shape[0], e.shape[0]
        x = torch.cat([e, seq], -1)[None].expand(c, length, -1)
        mask = (torch.arange(length, device=e.device) < history_length)[None].expand(c, length)
        h = m.item_cam(x, item, mask=mask)
        parts = [user, (h * mask[..., None].to(h.dtype)).sum(1), item]
        if m.context_proj is not None:
            parts.append(m.context_proj(torch.cat([self._emb(k, ids[k]) for k in m.context_keys], -1)))
        prediction = m.serve(m.generate(m.z(torch.cat(parts, -1))))
        return prediction.probs, prediction.times
