"""Selection helpers shared by DIET and its baselines: stratified top-k and per-block quotas."""

from __future__ import annotations

import numpy as np
import torch


def quotas(total: int, sizes: np.ndarray) -> np.ndarray:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainder; sums to ``total``,
    never more than a group's size)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = min(int(total), int(sizes.sum()))
    exact = total * sizes / max(int(sizes.sum()), 1)
    out = np.minimum(np.floor(exact).astype(np.int64), sizes)
    for i in np.argsort(-(exact - out), kind="stable"):
        if out.sum() >= total:
            break
        if out[i] < sizes[i]:
            out[i] += 1
    while out.sum() < total:  # capped groups: give the rest to groups with room
        room = np.flatnonzero(out < sizes)
        out[room[0]] += 1
    return out


def stratified_top(scores: torch.Tensor, strata: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` samples with the highest ``scores``, keeping each stratum's share (e.g. the rate of
    the main label): stratum ``v`` gets ``quotas(k, counts)[v]`` of its best samples.

    >>> stratified_top(torch.tensor([5., 1., 4., 3., 2., 0.]), torch.tensor([0, 0, 0, 1, 1, 1]), 4).tolist()
    [0, 2, 3, 4]
    """
    values = torch.unique(strata)
    counts = np.array([int((strata == v).sum()) for v in values])
    picked = []
    for v, q in zip(values, quotas(k, counts)):
        idx = torch.nonzero(strata == v).flatten()
        picked.append(idx[torch.argsort(scores[idx], descending=True, stable=True)[: int(q)]])
    return torch.sort(torch.cat(picked)).values if picked else torch.zeros(0, dtype=torch.long)
