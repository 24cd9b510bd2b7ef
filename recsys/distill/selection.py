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


def capped(order: torch.Tensor, groups: np.ndarray, room: np.ndarray, k: int) -> torch.Tensor:
    """The first ``k`` of ``order`` (indices, best first) whose group still has room; ``room`` (per group) is
    used up in place, so successive calls share it. E.g. groups ``[0, 0, 0, 1]``, room ``[2, 1]``, order
    ``[0, 1, 2, 3]``, k 3: ``[0, 1, 3]``."""
    keep = []
    for i in order.tolist():
        if len(keep) == k:
            break
        if room[groups[i]] > 0:
            room[groups[i]] -= 1
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def stratified_top(scores: torch.Tensor, strata: torch.Tensor, k: int, groups: np.ndarray | None = None,
                   room: np.ndarray | None = None) -> torch.Tensor:
    """Indices of ``k`` samples with the highest ``scores``, keeping each stratum's share (e.g. the rate of
    the main label): stratum ``v`` gets ``quotas(k, counts)[v]`` of its best samples. With ``groups`` (a group
    per sample, e.g. its user) and ``room`` (per group), a group's samples are taken while it has room
    (:func:`capped`; a stratum may then get fewer).

    >>> stratified_top(torch.tensor([5., 1., 4., 3., 2., 0.]), torch.tensor([0, 0, 0, 1, 1, 1]), 4).tolist()
    [0, 2, 3, 4]
    """
    values = torch.unique(strata)
    counts = np.array([int((strata == v).sum()) for v in values])
    picked = []
    for v, q in zip(values, quotas(k, counts)):
        idx = torch.nonzero(strata == v).flatten()
        order = idx[torch.argsort(scores[idx], descending=True, stable=True)]
        picked.append(order[: int(q)] if groups is None else capped(order, groups, room, int(q)))
    return torch.sort(torch.cat(picked)).values if picked else torch.zeros(0, dtype=torch.long)
