"""Beam search over semantic-ID levels, constrained to valid SIDs by a :class:`PrefixTrie`.

TIGER (Rajput et al., NeurIPS 2023) and GEMs (arXiv 2602.13631; /work/shared/PAPERS.md Sec. 2.2,
"Inference") decode the next item's SID token by token from BOS with beam search, beam width = number
of items to return, and map the SID tuples back to items. Constraining every step to the trie of valid
SIDs (so no beam is wasted on an ID no item has) is a common choice; the interface below is ours.

The model plugs in through ``step_fn(prefix [B*K, l], state) -> (log_probs [B*K, C_l], new_state)``:
``prefix`` holds the tokens decoded so far (``l = 0`` at the first step; the newest token is
``prefix[:, -1]``), row ``b * K + k`` is beam ``k`` of batch row ``b``. ``state`` is anything the model
keeps between steps (encoder output, KV cache): a (nested) dict / list / tuple whose tensors all have
leading dim ``B*K``, aligned with ``prefix``. After each step the search re-orders the returned state
with :func:`reorder_state` (``index_select(0, ...)``) so that row ``b*K + k`` again belongs to the new
beam ``k``. The initial ``state`` may have leading dim ``B`` (each row is repeated ``K`` times) or
``B*K``. Non-tensor leaves are passed through untouched.

With ``first_step_per_row=True`` the first step is called with ``prefix [B, 0]`` (one row per batch row:
all ``K`` beams start from the same empty prefix, so ``K - 1`` of the rows would repeat the same work; a
third of the decoding FLOPs for 3-level SIDs) and a state of leading dim ``B``; the search then repeats
each row of the returned state for the ``K`` beams. The step function must accept both row counts.

>>> logp = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.3, 0.2]]))   # P(t0), P(t1) (independent)
>>> def step(prefix, state):
...     return logp[prefix.shape[1]].expand(prefix.shape[0], 3), state
>>> trie = PrefixTrie(torch.tensor([[0, 0], [1, 1], [1, 2], [2, 0]]), [3, 3])
>>> sids, scores = constrained_beam_search(step, 1, 2, [3, 3], 3, trie)
>>> sids[0].tolist()                        # (1, 0) has the best score but is not a valid SID
[[1, 1], [2, 0], [1, 2]]
>>> [round(float(s.exp()), 3) for s in scores[0]]
[0.18, 0.15, 0.12]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from recsys.models.semantic_ids import PrefixTrie, SemanticIds

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def reorder_state(state: Any, index: torch.Tensor) -> Any:
    """``index_select(0, index)`` applied to every tensor of a (nested) dict / list / tuple.

    >>> s = reorder_state({"kv": [torch.tensor([10, 11, 12])], "step": 3}, torch.tensor([2, 2, 0]))
    >>> s["kv"][0].tolist(), s["step"]
    ([12, 12, 10], 3)
    """
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        out = [reorder_state(v, index) for v in state]
        return type(state)(*out) if hasattr(state, "_fields") else type(state)(out)
    return state


def _first_tensor(state: Any) -> torch.Tensor | None:
    if isinstance(state, torch.Tensor):
        return state
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def constrained_beam_search(
    step_fn: StepFn, batch_size: int, levels: int, codebook_sizes: Sequence[int], beam_width: int,
    trie: PrefixTrie | None, *, state: Any = None, device: torch.device | str | None = None,
    first_step_per_row: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``beam_width`` SIDs per batch row: ``(sids LongTensor [B, K, L], scores [B, K])``.

    ``score`` = sum of the step log-probs along the SID; beams are sorted by score, best first. Tokens
    outside the trie get ``-inf`` (``trie=None``: unconstrained). The first step starts from one live
    beam per row (the other ``K - 1`` start at ``-inf``), so no beam is duplicated. If a row has fewer
    than ``K`` valid SIDs, the surplus beams keep score ``-inf``, come last, and their SIDs are set to
    ``-1``. Exact (the true top-``K`` valid SIDs) when ``K`` is at least the number of distinct valid
    prefixes of every length ``< L`` (nothing is pruned before the last step), e.g. ``K >= #SIDs``.
    """
    b, k = batch_size, beam_width
    first = _first_tensor(state)
    if device is not None:
        dev = torch.device(device)
    else:
        dev = first.device if first is not None else torch.device("cpu")
    if first_step_per_row and first is not None and first.shape[0] != b:
        raise ValueError(f"first_step_per_row needs an initial state with leading dim {b}, got {first.shape[0]}")
    if not first_step_per_row and first is not None and first.shape[0] == b and k > 1:
        state = reorder_state(state, torch.arange(b, device=dev).repeat_interleave(k))
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    prefix = torch.zeros(b, k, 0, dtype=torch.long, device=dev)
    base = (torch.arange(b, device=dev) * k)[:, None]
    for l in range(levels):
        c = int(codebook_sizes[l])
        if l == 0 and first_step_per_row:
            row_log_probs, state = step_fn(prefix[:, 0], state)
            if row_log_probs.shape != (b, c):
                raise ValueError(f"step_fn returned {tuple(row_log_probs.shape)}, expected {(b, c)}")
            # As if every beam had computed it: the scores of beams 1..K-1 (-inf) mask their copies.
            log_probs = row_log_probs.repeat_interleave(k, dim=0)
            state_row = torch.arange(b, device=dev).repeat_interleave(k)  # beam b*K + j reads row b
        else:
            log_probs, state = step_fn(prefix.reshape(b * k, l), state)
            state_row = None
        if log_probs.shape != (b * k, c):
            raise ValueError(f"step_fn returned {tuple(log_probs.shape)}, expected {(b * k, c)}")
        log_probs = log_probs.float()
        if trie is not None:
            log_probs = log_probs.masked_fill(~trie.mask(prefix.reshape(b * k, l)), float("-inf"))
        cand = (scores[:, :, None] + log_probs.view(b, k, c)).view(b, k * c)
        scores, idx = cand.topk(min(k, k * c), dim=1)  # sorted, best first
        beam, tok = idx // c, idx % c
        prefix = torch.cat([prefix.gather(1, beam[:, :, None].expand(-1, -1, l)), tok[:, :, None]], 2)
        picked = (base + beam).reshape(-1)
        state = reorder_state(state, picked if state_row is None else state_row[picked])  # one copy a step
    prefix = prefix.masked_fill(torch.isneginf(scores)[:, :, None], -1)
    return prefix, scores


def beam_search_items(
    step_fn: StepFn, semantic_ids: SemanticIds, batch_size: int, beam_width: int, *,
    state: Any = None, trie: PrefixTrie | None = None, device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Constrained beam search mapped to items: ``(items [B, K], scores [B, K])``, best first.

    Beams that are not an item's SID (only the ``-inf`` surplus beams when the trie comes from the same
    ``semantic_ids``) are dropped: the valid items are moved to the front (order kept) and the tail is
    padded with item ``-1`` and score ``-inf``. ``trie`` defaults to ``semantic_ids.trie()``.
    """
    trie = trie if trie is not None else semantic_ids.trie()
    sids, scores = constrained_beam_search(
        step_fn, batch_size, semantic_ids.levels, semantic_ids.codebook_sizes, beam_width, trie,
        state=state, device=device,
    )
    items = semantic_ids.item_of(sids)
    valid = items >= 0
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    items, valid, scores = items.gather(1, order), valid.gather(1, order), scores.gather(1, order)
    return items, scores.masked_fill(~valid, float("-inf"))
