"""GEMs as three exportable programs over padded tensors: fold, encode, and one decoding step per level.

Training reads KeyedJaggedTensors; a serving program wants plain tensors of fixed window sizes, so these
wrappers re-express :class:`recsys.models.gems.GEMs`'s inference with the *same modules and weights*
(tests check they give the same numbers as the training model):

* :class:`GEMsFold` ``(items, authors, actions, ages, plays, lengths [B, L]) -> (total [B, d, d], count [B])``:
  the lifecycle state of events (:meth:`QuasiLinearSummarizer.state`), computed offline and summed into
  a user's cache as events age out of the mid-term window;
* :class:`GEMsEncode`: the recent and mid-term windows (padded to their sizes, oldest first, with lengths)
  and the cached lifecycle state -> every stream's cross-attention keys/values per layer, the indexer
  keys and the masks: what a user's beams share (:meth:`GEMs.memory_kv`);
* :class:`GEMsStep` (one per SID level): the previous token of every beam ``[B, K]`` and the
  self-attention cache ``[B, K, H, l, dh]`` per layer -> log-probabilities of the level's codes
  ``[B, K, C_l]`` and the extended cache. Beam bookkeeping and the trie stay in Python
  (:func:`recsys.models.beam_search.constrained_beam_search`).

The batch ``B`` and the beam width ``K`` are dynamic dimensions of the exported programs; the windows are
fixed. The top-K mid-term attention is the training model's own per-query gather kernel (static shapes).

Worked example of a request's windows (B = 1 user, recent window 4, mid-term window 6): events oldest
first, left-aligned, 0 = padding; ``ages`` in hours before the request, ``actions`` bitmasks, ``plays``
play times in seconds (0 = unknown; read by models trained with ``play_time`` only)::

    recent_items [[12, 7, 0, 0]]        recent_lengths [2]     (the user's 2 newest events)
    mid_items    [[3, 3, 9, 0, 0, 0]]   mid_lengths    [3]     (the 3 events before those)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.models.gems import GEMs


def stream_inputs(streams: tuple[str, ...]) -> list[str]:
    """Names of :class:`GEMsEncode`'s inputs, in order."""
    names = []
    for s in ("recent", "mid"):
        if s in streams:
            names += [f"{s}_items", f"{s}_authors", f"{s}_actions", f"{s}_ages", f"{s}_plays", f"{s}_lengths"]
    if "life" in streams:
        names += ["life_total", "life_count"]
    return names


def embed_events(gems: GEMs, items: torch.Tensor, authors: torch.Tensor, actions: torch.Tensor,
                 ages: torch.Tensor, plays: torch.Tensor) -> torch.Tensor:
    """Padded events ``[B, L]`` -> embeddings ``[B, L, d]`` (:class:`EventEmbedding` on dense tensors)."""
    tables = gems.events.features.collection.embeddings
    x = tables["item"](items)
    if "author" in tables:
        x = x + tables["author"](authors)
    return gems.events.combine(x, actions, ages, items, plays)


class GEMsFold(nn.Module):
    def __init__(self, gems: GEMs) -> None:
        super().__init__()
        self.gems = gems

    def forward(self, items: torch.Tensor, authors: torch.Tensor, actions: torch.Tensor, ages: torch.Tensor,
                plays: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = embed_events(self.gems, items, authors, actions, ages, plays)
        mask = torch.arange(items.shape[1], device=items.device) < lengths[:, None]
        summ = self.gems.summarizer
        k = F.silu(summ.k(x)) * mask[..., None].to(x.dtype)  # padding adds nothing
        return k.transpose(1, 2) @ summ.v(x), lengths.to(x.dtype)


class GEMsEncode(nn.Module):
    def __init__(self, gems: GEMs) -> None:
        super().__init__()
        self.gems = gems
        self.inputs = stream_inputs(gems.config.streams)

    def outputs(self) -> list[str]:
        """Names of the outputs, in order (what :class:`GEMsStep` takes as ``memory``)."""
        g = self.gems
        names = [f"{s}_{kv}_{i}" for i, block in enumerate(g.blocks) for s in block.streams for kv in ("k", "v")]
        if "mid" in g.config.streams:
            names.append("indexer_keys")
        return names + [f"{s}_mask" for s in g.config.streams]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = self.gems
        inp = dict(zip(self.inputs, tensors))
        memories: dict[str, dict[str, torch.Tensor]] = {}
        for s in ("recent", "mid"):
            if s not in g.config.streams:
                continue
            items, lengths = inp[f"{s}_items"], inp[f"{s}_lengths"]
            x = embed_events(g, items, inp[f"{s}_authors"], inp[f"{s}_actions"], inp[f"{s}_ages"], inp[f"{s}_plays"])
            positions = torch.arange(items.shape[1], device=items.device)
            mask = positions < lengths[:, None]
            if s == "recent":  # positions count from the newest event, as in GEMs.encode
                pos = (lengths[:, None] - 1 - positions).clamp(min=0, max=g.config.recent - 1)
                x = x + g.recent_pos[pos]
                for layer in g.recent_encoder:
                    x = layer(x, key_mask=mask)
            memories[s] = {"memory": x * mask[..., None].to(x.dtype), "mask": mask}
        if "life" in g.config.streams:
            total, count = inp["life_total"], inp["life_count"]
            summaries = g.summarizer.summaries(total, count)
            memories["life"] = {"memory": summaries, "mask": (count > 0)[:, None].expand(-1, summaries.shape[1])}
        kv = g.memory_kv(memories)
        out = [t for i, block in enumerate(g.blocks) for s in block.streams for t in kv[(s, i)]]
        if "mid" in g.config.streams:
            out.append(kv["indexer"])
        return (*out, *[memories[s]["mask"] for s in g.config.streams])


class GEMsStep(nn.Module):
    """One decoding step at SID level ``level`` (see the module docstring)."""

    def __init__(self, gems: GEMs, level: int, stage: int = 3) -> None:
        super().__init__()
        self.gems, self.level, self.stage = gems, level, stage

    def forward(self, tokens: torch.Tensor, cache: tuple[torch.Tensor, ...], memory: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        g, level = self.gems, self.level
        b, beams = tokens.shape
        n = b * beams
        if level == 0:
            x = g.bos.expand(n, 1, -1) + g.level_pos[0]
        else:
            x = g.codes[level - 1](tokens.reshape(n))[:, None] + g.level_pos[level]
        self_cache = {i: {"k": cache[2 * i].flatten(0, 1), "v": cache[2 * i + 1].flatten(0, 1)}
                      for i in range(len(g.blocks))} if level > 0 else {}
        it = iter(memory)
        memory_kv: dict = {(s, i): (next(it), next(it)) for i, block in enumerate(g.blocks) for s in block.streams}
        if "mid" in g.config.streams:
            memory_kv["indexer"] = next(it)
        memories = {}
        for s in g.config.streams:
            mask = next(it)
            memories[s] = {"memory": mask, "mask": mask}  # decode reads the memory's length and the mask only
        states, _ = g.decode(x, memories, stage=self.stage, beams=beams, memory_kv=memory_kv, self_cache=self_cache)
        log_probs = torch.log_softmax(g.level_logits(states[:, -1], level).float(), dim=-1)
        new_cache = tuple(self_cache[i][kv].unflatten(0, (b, beams)) for i in range(len(g.blocks)) for kv in ("k", "v"))
        return log_probs.view(b, beams, -1), new_cache
