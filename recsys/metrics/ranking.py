"""Top-K ranking metrics: HR@K, NDCG@K, Recall@K and MRR.

Two input layouts share one set of functions:

* **Full catalogue**: ``scores`` is ``[B, N]``, one score per catalogue item, and ``target`` ``[B]`` holds
  the int64 index of the held-out item. ``exclude`` removes items that must never be ranked (padding
  index 0, items already in the user's history): a bool mask ``[B, N]`` or ``[N]``, or a list of item
  indices. Excluded items behave as if they were scored ``-inf`` *and* are not counted as candidates;
  the target itself is never excluded (a history item that is also the target stays rankable).
* **Sampled candidates**: ``target=None``. Column 0 of ``scores`` ``[B, 1 + n]`` is the positive and
  columns ``1..n`` are its sampled negatives. ``exclude`` still works, e.g. to drop sampled negatives
  that collide with the positive.

Single target. The rank of the target is 0-based and **pessimistic** under ties::

    rank = #{candidates scoring strictly higher} + #{OTHER candidates scoring exactly the same}

so a constant scorer gets the worst rank (``N - 1``) and never an inflated metric. Then

* ``HR@K = 1[rank < K]`` and ``Recall@K = HR@K`` (one relevant item);
* ``NDCG@K = 1 / log2(rank + 2)`` if ``rank < K`` else 0 (the ideal DCG of one item is 1);
* ``MRR = 1 / (rank + 1)``, over the full ranking, **not** truncated at any K.

Multiple targets (``relevant``: a bool mask ``[B, N]`` or jagged ``(values, offsets)``), with ``T`` the
relevant set of a row and the top-K list built by ``torch.topk``:

* ``Recall@K = |topK ∩ T| / |T|``, ``HR@K = 1[|topK ∩ T| > 0]``;
* ``NDCG@K = DCG@K / IDCG@K``, ``DCG@K = sum over relevant positions p < K of 1 / log2(p + 2)`` and the
  ideal DCG puts relevant items in the first ``min(|T|, K)`` positions;
* ``MRR = 1 / (rank of the best-ranked relevant item + 1)``, not truncated.

Ties are broken deterministically and pessimistically here too: among equal scores the irrelevant items
come first (whatever order ``torch.topk`` returned). With a single relevant item both layouts give the
same numbers. Rows whose relevant set is empty are undefined: per-row values are NaN and the averages
skip them. NaN scores are treated as ``-inf``.

>>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
>>> int(target_rank(scores, torch.tensor([2])))  # only 0.9 beats 0.5
1
>>> {k: round(float(v), 4) for k, v in ranking_metrics(scores, torch.tensor([2]), ks=(1, 2)).items()}
{'hr@1': 0.0, 'ndcg@1': 0.0, 'recall@1': 0.0, 'hr@2': 1.0, 'ndcg@2': 0.6309, 'recall@2': 1.0, 'mrr': 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

#: Items never to rank: a bool mask ``[B, N]`` / ``[N]``, or item indices (tensor or sequence of ints).
Exclude = Tensor | Sequence[int] | None
#: Relevant sets: a bool mask ``[B, N]``, or jagged ``(values, offsets)`` with ``offsets`` of length B + 1.
Relevant = Tensor | tuple[Tensor, Tensor]

__all__ = [
    "Exclude",
    "RankingMetrics",
    "Relevant",
    "jagged_to_mask",
    "metric_names",
    "metrics_from_rank",
    "multi_target_metrics",
    "ranking_metrics",
    "target_rank",
]


def metric_names(ks: Sequence[int]) -> list[str]:
    """The keys produced for ``ks``, in output order.

    >>> metric_names([5])
    ['hr@5', 'ndcg@5', 'recall@5', 'mrr']
    """
    return [f"{m}@{k}" for k in ks for m in ("hr", "ndcg", "recall")] + ["mrr"]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k <= 0 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers, got {ks}")
    return ks


def _keep_mask(exclude: Exclude, scores: Tensor) -> Tensor | None:
    """Bool mask broadcastable to ``scores``: True for items that take part in the ranking."""
    if exclude is None:
        return None
    n = scores.shape[1]
    if isinstance(exclude, Tensor) and exclude.dtype == torch.bool:
        if exclude.shape not in ((n,), scores.shape):
            raise ValueError(f"exclude mask must be [N] or [B, N], got {tuple(exclude.shape)}")
        return ~exclude.to(scores.device).view(-1, n)
    idx = torch.as_tensor(exclude, dtype=torch.long, device=scores.device)
    if idx.ndim > 1:  # per-row index lists would silently be read as global columns
        raise ValueError("exclude indices must be 1-D (the same items for every row); pass a [B, N] mask")
    if idx.numel() == 0:
        return None
    keep = torch.ones(1, n, dtype=torch.bool, device=scores.device)
    keep[0, idx] = False
    return keep


def _check_scores(scores: Tensor) -> None:
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be [B, N] with N >= 1, got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")


def target_rank(scores: Tensor, target: Tensor | None = None, exclude: Exclude = None) -> Tensor:
    """0-based pessimistic rank ``[B]`` (int64) of each row's target among the kept candidates.

    ``target=None`` selects the sampled-candidate layout (column 0 is the positive).

    >>> target_rank(torch.tensor([[0.5, 0.5, 0.5, 0.1]]), torch.tensor([1]))  # 2 other ties count
    tensor([2])
    >>> target_rank(torch.tensor([[0.5, 0.5, 0.5, 0.1]]), torch.tensor([1]), exclude=[0])
    tensor([1])
    >>> target_rank(torch.tensor([[0.3, 0.7, 0.2], [0.9, 0.1, 0.2]]))  # sampled layout
    tensor([1, 0])
    """
    _check_scores(scores)
    b = scores.shape[0]
    if target is None:
        target = torch.zeros(b, dtype=torch.long, device=scores.device)
    target = target.to(device=scores.device, dtype=torch.long).view(-1, 1)
    if target.shape[0] != b:
        raise ValueError(f"target must be [B] = [{b}], got {target.shape[0]} rows")
    t = scores.gather(1, target)
    t = t.masked_fill(t.isnan(), float("-inf"))
    # Two [B, N] bool temporaries (1 byte per item): memory is O(B * N), never O(B * N * K).
    higher = scores > t
    equal = scores == t
    if bool((t == float("-inf")).any()):  # NaN candidates count as -inf: they tie with a -inf target
        equal |= scores.isnan() & (t == float("-inf"))
    keep = _keep_mask(exclude, scores)
    if keep is None:
        return higher.sum(1) + equal.sum(1) - 1  # the target always equals itself
    higher &= keep
    equal &= keep
    self_counted = keep.expand(b, -1).gather(1, target).squeeze(1).long()
    return higher.sum(1) + equal.sum(1) - self_counted


def metrics_from_rank(rank: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-row float32 metrics ``{"hr@K", "ndcg@K", "recall@K", "mrr"}`` from single-target ranks.

    >>> m = metrics_from_rank(torch.tensor([0, 3]), ks=[2])
    >>> m["hr@2"], m["ndcg@2"], m["mrr"]
    (tensor([1., 0.]), tensor([1., 0.]), tensor([1.0000, 0.2500]))
    """
    ks = _check_ks(ks)
    rank_f = rank.to(torch.float32)
    gain = 1.0 / torch.log2(rank_f + 2.0)
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = hit.float()
        out[f"ndcg@{k}"] = torch.where(hit, gain, 0.0)
        out[f"recall@{k}"] = hit.float()
    out["mrr"] = 1.0 / (rank_f + 1.0)
    return out


def jagged_to_mask(values: Tensor, offsets: Tensor, num_items: int) -> Tensor:
    """Bool mask ``[B, num_items]`` from jagged item lists (row i is ``values[offsets[i]:offsets[i+1]]``).

    Duplicates collapse: a relevant set is a set.

    >>> jagged_to_mask(torch.tensor([2, 0, 3]), torch.tensor([0, 1, 3]), 4).int()
    tensor([[0, 0, 1, 0],
            [1, 0, 0, 1]], dtype=torch.int32)
    """
    offsets = offsets.to(device=values.device, dtype=torch.long)
    lengths = offsets[1:] - offsets[:-1]
    rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), lengths)
    mask = torch.zeros(lengths.numel(), num_items, dtype=torch.bool, device=values.device)
    mask[rows, values[offsets[0] : offsets[-1]].long()] = True
    return mask


def _relevant_mask(relevant: Relevant, scores: Tensor) -> Tensor:
    if isinstance(relevant, tuple):
        return jagged_to_mask(relevant[0].to(scores.device), relevant[1], scores.shape[1])
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant mask must match scores {tuple(scores.shape)}, got {tuple(relevant.shape)}")
    return relevant.to(device=scores.device, dtype=torch.bool)


def _multi_target(
    scores: Tensor, rel: Tensor, ks: tuple[int, ...], exclude: Exclude
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-row metrics and the bool ``[B]`` of rows with a non-empty relevant set."""
    b, n = scores.shape
    keep = _keep_mask(exclude, scores)
    # Relevant items are never excluded. Excluded items are pushed to -inf for topk *and* left out of
    # every count below, so a kept item that really scores -inf (or NaN, read as -inf) is not
    # confused with an excluded one.
    ok = torch.ones_like(rel) if keep is None else keep | rel
    fill = scores.isnan() | ~ok
    s = scores.masked_fill(fill, float("-inf")) if bool(fill.any()) else scores
    del fill

    k_max = min(max(ks), n)
    vals, idx = torch.topk(s, k_max, dim=1)  # [B, k_max]: no [B, N, K] anywhere
    v = vals[:, -1:]  # the k_max-th largest score: the only tie block cut by the list boundary
    rel_k = rel.gather(1, idx)
    # Pessimistic, deterministic order inside the list: score descending, irrelevant first on ties.
    # Two stable sorts build that lexicographic order whatever order topk used for equal scores.
    order = torch.argsort(rel_k.to(torch.uint8), dim=1, stable=True)
    vals, rel_k = vals.gather(1, order), rel_k.gather(1, order)
    rel_k = rel_k.gather(1, torch.sort(vals, dim=1, descending=True, stable=True).indices)
    # Positions < n_gt hold exactly the items scoring above v. The tie block at v may extend past the
    # list, so fill it from whole-row counts: its irrelevant members first, then its relevant ones.
    n_gt = ((s > v) & ok).sum(1, keepdim=True)
    eq = (s == v) & ok
    n_eq = eq.sum(1, keepdim=True)
    n_eq_rel = (eq & rel).sum(1, keepdim=True)
    pos = torch.arange(k_max, device=s.device).unsqueeze(0)
    in_tie = pos - n_gt
    hits = torch.where(pos < n_gt, rel_k, (in_tie >= n_eq - n_eq_rel) & (in_tie < n_eq))

    n_rel = rel.sum(1)
    valid = n_rel > 0
    n_rel_f = n_rel.to(torch.float32)
    disc = 1.0 / torch.log2(torch.arange(k_max, device=s.device, dtype=torch.float32) + 2.0)
    ideal = torch.cat([disc.new_zeros(1), disc.cumsum(0)])  # ideal[m] = IDCG with m relevant items
    gains = hits.float() * disc
    nan = torch.tensor(float("nan"), device=s.device)
    out: dict[str, Tensor] = {}
    for k in ks:
        kk = min(k, k_max)
        n_hit = hits[:, :kk].sum(1).float()
        idcg = ideal[torch.clamp(n_rel, max=kk)]
        out[f"hr@{k}"] = torch.where(valid, (n_hit > 0).float(), nan)
        out[f"ndcg@{k}"] = torch.where(valid, gains[:, :kk].sum(1) / idcg.clamp_min(1e-12), nan)
        out[f"recall@{k}"] = torch.where(valid, n_hit / n_rel_f.clamp_min(1.0), nan)
    # MRR: pessimistic rank of the best relevant score b, as in target_rank.
    best = torch.where(rel, s, float("-inf")).amax(1, keepdim=True)
    first = ((s > best) & ok).sum(1) + ((s == best) & ok & ~rel).sum(1)
    out["mrr"] = torch.where(valid, 1.0 / (first.float() + 1.0), nan)
    return out, valid


def multi_target_metrics(
    scores: Tensor, relevant: Relevant, ks: Sequence[int] = (10,), exclude: Exclude = None
) -> dict[str, Tensor]:
    """Per-row float32 metrics for a set of relevant items per row (NaN for rows with none).

    >>> s = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    >>> rel = torch.tensor([[False, True, False, True, False]])
    >>> m = multi_target_metrics(s, rel, ks=[2])
    >>> [round(float(m[k]), 4) for k in ("hr@2", "recall@2", "ndcg@2", "mrr")]
    [1.0, 0.5, 0.3869, 0.5]
    """
    _check_scores(scores)
    return _multi_target(scores, _relevant_mask(relevant, scores), _check_ks(ks), exclude)[0]


def ranking_metrics(
    scores: Tensor,
    target: Tensor | None = None,
    *,
    relevant: Relevant | None = None,
    ks: Sequence[int] = (10,),
    exclude: Exclude = None,
) -> dict[str, Tensor]:
    """Batch means of HR@K, NDCG@K, Recall@K and MRR (keys as in :func:`metric_names`).

    Give ``relevant`` for multiple targets, else ``target`` (or ``None`` for the sampled layout). Rows with
    an empty relevant set are skipped; if none is left the means are NaN.
    """
    rows, valid = _per_row(scores, target, relevant, _check_ks(ks), exclude)
    return {k: v[valid].mean() for k, v in rows.items()}


def _per_row(
    scores: Tensor, target: Tensor | None, relevant: Relevant | None, ks: tuple[int, ...], exclude: Exclude
) -> tuple[dict[str, Tensor], Tensor]:
    _check_scores(scores)
    if relevant is not None:
        if target is not None:
            raise ValueError("give either target or relevant, not both")
        return _multi_target(scores, _relevant_mask(relevant, scores), ks, exclude)
    rank = target_rank(scores, target, exclude)
    return metrics_from_rank(rank, ks), torch.ones_like(rank, dtype=torch.bool)


class RankingMetrics(Metric):
    """Streaming HR@K / NDCG@K / Recall@K / MRR, averaged over rows (queries).

    States are a float64 vector of per-metric sums and an int64 row count, both reduced with ``"sum"``,
    so DDP sync is exact and cheap. ``update`` takes the arguments of :func:`ranking_metrics`;
    ``compute`` returns a flat dict ``{"hr@10": ..., "ndcg@10": ..., "recall@10": ..., "mrr": ...}``.

    >>> m = RankingMetrics(ks=(1,))
    >>> m.update(torch.tensor([[0.2, 0.9, 0.1]]), torch.tensor([1]))
    >>> m.update(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([2]))
    >>> {k: round(float(v), 4) for k, v in m.compute().items()}
    {'hr@1': 0.5, 'ndcg@1': 0.5, 'recall@1': 0.5, 'mrr': 0.75}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (10, 50), **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = _check_ks(ks)
        self.names = metric_names(self.ks)
        self.add_state("sums", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        scores: Tensor,
        target: Tensor | None = None,
        *,
        relevant: Relevant | None = None,
        exclude: Exclude = None,
    ) -> None:
        with torch.no_grad():
            rows, valid = _per_row(scores.detach(), target, relevant, self.ks, exclude)
            stacked = torch.stack([rows[name] for name in self.names], dim=1)[valid]
            self.sums += stacked.to(torch.float64).sum(0).to(self.sums.device)
            self.count += valid.sum().to(self.count.device)

    def compute(self) -> dict[str, Tensor]:
        means = (self.sums / self.count).to(torch.float32)  # 0 / 0 = NaN when nothing was counted
        return {name: means[i] for i, name in enumerate(self.names)}
