"""The proxy model DIET distils with: a small CTR network in plain PyTorch, written as a function of a
parameter dict so that an inner training loop can be differentiated (``torch.func``-style unrolling).

DIET (arXiv 2603.24958) distils with a proxy model and trains other architectures on the result; the
paper's proxy is not public (our reconstruction). Ours is the embedding-MLP that CTR papers use as
their simplest deep model, on the same features as the toolkit's ranking baselines
(:class:`~recsys.models.mmoe.ChainInput`): one embedding per single-valued key, the mean embedding of the
history items, the history's mean action slots, then ``h = relu(x W1 + b1)`` and one logit per action,
``h W2 + b2``. ``h`` is the embedding space of the coreset baselines and ``(W2, b2)`` the last layer
whose gradients give influence scores (:mod:`recsys.distill.influence`).

Shapes, Tmall (7 keys, K = 3), ``dim = 8``, ``hidden = 64``, a batch of B::

    ids [B, 7] -> [B, 56];  history [B, L] -> mean [B, 8];  slots [B, 9]   -> x [B, 73]
    h = relu(x W1 + b1) [B, 64];  logits = h W2 + b2 [B, 3]

A relaxed column (DIET's soft one-hot option, :class:`~recsys.distill.stream.RelaxedField`) takes
``probs [B, V] @ emb[offset : offset + V]`` in place of its id's row: Tmall's ``gender`` (3 ids) as
``[0.05, 0.9, 0.05]`` mixes its three rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recsys.distill.stream import ProxyInputs

Params = dict[str, torch.Tensor]


def init_params(num_embeddings: int, num_keys: int, slot_dim: int, num_labels: int, *, dim: int = 8,
                hidden: int = 64, generator: torch.Generator | None = None) -> Params:
    """Fresh parameters (embeddings N(0, 0.05), Kaiming-uniform linears), drawn from ``generator``."""
    in_dim = dim * (num_keys + 1) + slot_dim

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound

    return {
        "emb": torch.randn(num_embeddings, dim, generator=generator) * 0.05,
        "w1": uniform((in_dim, hidden), in_dim), "b1": torch.zeros(hidden),
        "w2": uniform((hidden, num_labels), hidden), "b2": torch.zeros(num_labels),
    }


def hidden(params: Params, x: ProxyInputs) -> torch.Tensor:
    """``h [B, hidden]``: the representation before the last layer."""
    emb = params["emb"]
    # F.embedding, not ``emb[ids]``: advanced indexing's backward accumulates repeated ids in a varying
    # order on CPU threads, so memories built with one seed differed; embedding's backward (and double
    # backward, for DIET's unrolled steps) is deterministic.
    singles = F.embedding(x.ids, emb)  # [B, F, dim]
    if x.relaxed:  # soft one-hot columns: the expected embedding under each sample's distribution
        columns = list(singles.unbind(1))
        for c, r in x.relaxed.items():
            columns[c] = r.probs @ emb[r.offset : r.offset + r.probs.shape[1]]
        singles = torch.stack(columns, 1)
    singles = singles.flatten(1)
    mask = (x.history != 0).unsqueeze(-1).to(emb.dtype)
    hist = (F.embedding(x.history, emb) * mask).sum(1) / mask.sum(1).clamp(min=1)
    return F.relu(torch.cat([singles, hist, x.slots], dim=1) @ params["w1"] + params["b1"])


def logits(params: Params, x: ProxyInputs) -> torch.Tensor:
    """``[B, K]`` one logit per action."""
    return hidden(params, x) @ params["w2"] + params["b2"]


def weighted_bce(params: Params, x: ProxyInputs, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over actions of the BCE against ``targets [B, K]`` (soft or hard), weighted mean over samples."""
    per_sample = F.binary_cross_entropy_with_logits(logits(params, x), targets, reduction="none").mean(1)
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights).sum() / weights.sum().clamp(min=1e-12)


def train(params: Params, x: ProxyInputs, *, epochs: int, lr: float = 3e-3, batch_size: int = 256,
          generator: torch.Generator | None = None, checkpoints: int = 0) -> tuple[Params, list[Params]]:
    """Plain (non-differentiable) Adam training on real data; returns the final parameters and
    ``checkpoints`` snapshots taken at evenly spaced steps (for TracIn)."""
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    n = len(x)
    steps = epochs * max(1, math.ceil(n / batch_size))
    marks = {round(steps * (c + 1) / checkpoints) for c in range(checkpoints)} if checkpoints else set()
    snaps: list[Params] = []
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = weighted_bce(params, x.take(idx), x.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step in marks:
                snaps.append({k: v.detach().clone() for k, v in params.items()})
    return {k: v.detach() for k, v in params.items()}, snaps
