"""Pointwise (CTR-style) metrics: AUC, GAUC, LogLoss, and a per-action table of them.

* **AUC**: ROC AUC of scores against 0/1 labels, computed by torchmetrics' exact (non-binned)
  ``binary_auroc``. Equal scores count half a correct pair. With a single class (or no samples) AUC is
  undefined and :func:`auc` returns NaN without calling torchmetrics, so no warning is raised.
* **GAUC** (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018, Sec. 5.1):
  the per-group (per-user) AUC averaged with weights ``w_u``; we use ``w_u`` = the user's number of
  samples. Users whose labels are all 0 or all 1 have no AUC and are left out of both sums::

      GAUC = sum_u w_u * AUC_u / sum_u w_u

  ``AUC_u`` is the Mann-Whitney U statistic from average ranks (ties count half), computed for all
  groups at once with sorts and cumulative sums; no Python loop over users.
* **LogLoss**: mean binary cross-entropy on *probabilities* clamped to ``[eps, 1 - eps]``, ``eps = 1e-7``
  by default, so a confident wrong prediction costs at most ``-ln(1e-7) ≈ 16.12`` instead of ``inf``.
  For logits use :func:`log_loss_with_logits`, which is exact and needs no clamp.

Everything is computed in float64 and returned as a float32 scalar tensor.

>>> y = torch.tensor([0, 0, 1, 1, 0])
>>> round(float(auc(torch.tensor([0.1, 0.4, 0.35, 0.8, 0.6]), y)), 4)  # 4 of 6 pairs ordered
0.6667
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities.data import dim_zero_cat

#: Default probability clamp of :func:`log_loss`.
LOGLOSS_EPS = 1e-7
SUPPORTED = ("auc", "gauc", "logloss")

__all__ = [
    "LOGLOSS_EPS",
    "MultiActionMetrics",
    "auc",
    "flatten_metrics",
    "gauc",
    "group_auc",
    "log_loss",
    "log_loss_with_logits",
]


def _nan(device: torch.device) -> Tensor:
    return torch.tensor(math.nan, dtype=torch.float32, device=device)


def _binary_labels(labels: Tensor) -> Tensor:
    labels = labels.detach().flatten()
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0/1")
    return labels.bool()


def auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC; NaN if ``labels`` hold a single class. ``scores`` may be probabilities or logits.

    torchmetrics applies a sigmoid to scores outside ``[0, 1]``, which saturates large logits into false
    ties (``sigmoid(20) == sigmoid(30) == 1.0`` in float32). We hand it dense ranks scaled to ``[0, 1]``
    instead: the same order and the same ties, so the same AUC, for any input scale.

    >>> round(float(auc(torch.tensor([0.2, 0.5, 0.5, 0.9, 0.1]), torch.tensor([0, 1, 0, 1, 0]))), 6)  # 5.5 / 6
    0.916667
    >>> auc(torch.tensor([0.3, 0.6]), torch.tensor([1, 1]))
    tensor(nan)
    """
    pos = _binary_labels(labels)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == pos.numel():
        return _nan(scores.device)
    _, dense = torch.unique(scores.detach().flatten().double(), return_inverse=True)
    preds = dense.double() / max(int(dense.max()), 1)
    return binary_auroc(preds, pos.long(), thresholds=None).to(torch.float32)


def group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group AUC: ``(group_ids, auc, n_samples)``, groups sorted; AUC is NaN for single-class groups.

    Mann-Whitney with average ranks: within a group, ``AUC = (R_pos - P (P + 1) / 2) / (P * Q)`` where
    ``R_pos`` sums the 1-based ranks of the P positives among all samples (ascending score, a tie block
    shares its average rank) and Q is the number of negatives. Doubled ranks are integers, so the sums
    are exact int64.

    >>> ids, a, n = group_auc(torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7]), torch.tensor([0, 1, 0, 1, 1]),
    ...                       torch.tensor([7, 7, 7, 3, 3]))
    >>> ids.tolist(), a.tolist(), n.tolist()
    ([3, 7], [nan, 1.0], [2, 3])
    """
    scores, pos, groups = scores.detach().flatten(), _binary_labels(labels), groups.detach().flatten()
    if not (scores.numel() == pos.numel() == groups.numel()):
        raise ValueError("scores, labels and groups must have the same number of elements")
    dev = scores.device
    if scores.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return groups[:0], empty.float(), empty
    ids, g = torch.unique(groups, return_inverse=True)
    # Lexicographic sort by (group, score) from two stable sorts: every group becomes one contiguous
    # run of ascending scores, so ranks within a group are positions minus the group's start.
    order = torch.argsort(scores, stable=True)
    order = order[torch.argsort(g[order], stable=True)]
    g, s, pos = g[order], scores[order], pos[order]
    n = g.numel()
    idx = torch.arange(n, device=dev)

    new_group = torch.ones(n, dtype=torch.bool, device=dev)
    new_group[1:] = g[1:] != g[:-1]
    new_block = new_group.clone()  # a tie block: same group and same score
    new_block[1:] |= s[1:] != s[:-1]
    g_start = idx[new_group]  # run starts, one per group (ids are 0..G-1 in order)
    g_end = torch.cat([g_start[1:], g_start.new_tensor([n])])
    b_start = idx[new_block]
    b_end = torch.cat([b_start[1:], b_start.new_tensor([n])])
    block = new_block.cumsum(0) - 1
    # Twice the 1-based average rank within the group: positions b_start..b_end-1 average to
    # (b_start + b_end - 1) / 2, shifted by the group start and by one.
    rank2 = b_start[block] + b_end[block] + 1 - 2 * g_start[g]

    def seg_sum(x: Tensor) -> Tensor:  # per-group sums via cumsum: deterministic on every device
        c = torch.cat([x.new_zeros(1), x.cumsum(0)])
        return c[g_end] - c[g_start]

    n_g = g_end - g_start
    n_pos = seg_sum(pos.long())
    n_neg = n_g - n_pos
    u2 = seg_sum(torch.where(pos, rank2, 0)) - n_pos * (n_pos + 1)  # 2 * U
    aucs = u2.double() / (2 * n_pos * n_neg).double()  # 0 / 0 = NaN for single-class groups
    return ids, aucs.to(torch.float32), n_g


def gauc(scores: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Sample-weighted mean of per-group AUC over groups that have both classes; NaN if none does.

    >>> s = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.7, 0.4])
    >>> y = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0])
    >>> u = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3])   # user 1: AUC 1 (3 samples), user 2: 0.625 (4)
    >>> round(float(gauc(s, y, u)), 6)                # (3 * 1 + 4 * 0.625) / 7; user 3 is left out
    0.785714
    """
    _, aucs, n_g = group_auc(scores, labels, groups)
    ok = ~aucs.isnan()
    if not bool(ok.any()):
        return _nan(scores.device)
    w = n_g[ok].double()
    return ((aucs[ok].double() * w).sum() / w.sum()).to(torch.float32)


def log_loss(probs: Tensor, labels: Tensor, eps: float = LOGLOSS_EPS) -> Tensor:
    """Mean binary cross-entropy of probabilities clamped to ``[eps, 1 - eps]``; NaN when empty.

    >>> round(float(log_loss(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))), 6)  # -(ln .9 + ln .8) / 2
    0.164252
    >>> round(float(log_loss(torch.tensor([0.0]), torch.tensor([1]))), 4)  # -ln(1e-7), not inf
    16.1181
    """
    if probs.numel() == 0:
        return _nan(probs.device)
    # float64 before clamping: in float32/bfloat16, 1 - 1e-7 rounds to (or near) 1 and log(1 - p) blows up.
    p = probs.detach().double().clamp(eps, 1.0 - eps)
    return F.binary_cross_entropy(p, labels.detach().double().view_as(p)).to(torch.float32)


def log_loss_with_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)``, computed stably from logits (no clamp).

    >>> round(float(log_loss_with_logits(torch.tensor([0.0]), torch.tensor([1]))), 6)  # ln 2
    0.693147
    """
    if logits.numel() == 0:
        return _nan(logits.device)
    x = logits.detach().double()
    return F.binary_cross_entropy_with_logits(x, labels.detach().double().view_as(x)).to(torch.float32)


def flatten_metrics(nested: Mapping[str, Mapping[str, Tensor]], sep: str = "/") -> dict[str, Tensor]:
    """``{action: {metric: v}}`` -> ``{"metric/action": v}`` (the layout loggers group by prefix).

    >>> flatten_metrics({"click": {"auc": 0.7}, "like": {"auc": 0.6}})
    {'auc/click': 0.7, 'auc/like': 0.6}
    """
    return {f"{metric}{sep}{action}": v for action, row in nested.items() for metric, v in row.items()}


class MultiActionMetrics(Metric):
    """AUC / GAUC / LogLoss for each of several binary actions (click, like, ...) of a multi-task model.

    ``update(probs [B, A], labels [B, A], groups [B], mask [B, A] | None)``: ``probs`` are probabilities,
    ``mask`` marks which labels are observed (default: all), ``groups`` are user ids (needed only for
    ``"gauc"``). The samples themselves are kept as ``"cat"`` states (AUC is not decomposable into
    sums), so memory grows with the evaluation set: about 10 bytes per sample and action plus 8 per row.
    ``compute()`` returns ``{action: {"auc": ..., "gauc": ..., "logloss": ...}}``; :meth:`compute_flat`
    gives ``{"auc/click": ...}``.

    >>> m = MultiActionMetrics(["click", "like"], metrics=("auc", "logloss"))
    >>> m.update(torch.tensor([[0.9, 0.2], [0.1, 0.7], [0.6, 0.4]]), torch.tensor([[1, 0], [0, 1], [0, 1]]),
    ...          mask=torch.tensor([[True, True], [True, True], [True, False]]))
    >>> {k: round(float(v), 4) for k, v in m.compute_flat().items()}
    {'auc/click': 1.0, 'logloss/click': 0.3757, 'auc/like': 1.0, 'logloss/like': 0.2899}
    """

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        actions: Sequence[str],
        metrics: Sequence[str] = SUPPORTED,
        eps: float = LOGLOSS_EPS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.actions = tuple(actions)
        self.metric_names = tuple(metrics)
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError(f"actions must be distinct and non-empty, got {self.actions}")
        unknown = set(self.metric_names) - set(SUPPORTED)
        if unknown or not self.metric_names:
            raise ValueError(f"metrics must be a non-empty subset of {SUPPORTED}, got {self.metric_names}")
        self.eps = eps
        # Fixed, collective-friendly dtypes: float32 probs/labels, uint8 mask (not bool), int64 groups.
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("mask", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, labels: Tensor, groups: Tensor | None = None, mask: Tensor | None = None) -> None:
        a = len(self.actions)
        if probs.ndim != 2 or probs.shape[1] != a or labels.shape != probs.shape:
            raise ValueError(f"probs and labels must be [B, {a}], got {tuple(probs.shape)}, {tuple(labels.shape)}")
        if mask is None:
            mask = torch.ones_like(probs, dtype=torch.uint8)
        elif mask.shape != probs.shape:
            raise ValueError(f"mask must be [B, {a}], got {tuple(mask.shape)}")
        if groups is None:
            if "gauc" in self.metric_names:
                raise ValueError("groups (user ids) are required for gauc")
            groups = torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device)
        elif groups.numel() != probs.shape[0]:
            raise ValueError(f"groups must be [B] = [{probs.shape[0]}], got {tuple(groups.shape)}")
        self.probs.append(probs.detach().to(torch.float32))
        self.labels.append(labels.detach().to(torch.float32))
        self.mask.append(mask.detach().to(torch.uint8))
        self.groups.append(groups.detach().flatten().to(torch.long))

    def compute(self) -> dict[str, dict[str, Tensor]]:
        if isinstance(self.probs, list) and not self.probs:  # nothing seen: every value is undefined
            return {act: {m: _nan(self.device) for m in self.metric_names} for act in self.actions}
        probs, labels = dim_zero_cat(self.probs), dim_zero_cat(self.labels)
        mask, groups = dim_zero_cat(self.mask).bool(), dim_zero_cat(self.groups)
        out: dict[str, dict[str, Tensor]] = {}
        for i, action in enumerate(self.actions):
            seen = mask[:, i]
            p, y = probs[seen, i], labels[seen, i]
            fns = {
                "auc": lambda: auc(p, y),
                "gauc": lambda: gauc(p, y, groups[seen]),
                "logloss": lambda: log_loss(p, y, self.eps),
            }
            out[action] = {m: fns[m]() for m in self.metric_names}
        return out

    def compute_flat(self, sep: str = "/") -> dict[str, Tensor]:
        """:meth:`compute` flattened by :func:`flatten_metrics`: ``{"auc/click": ..., ...}``."""
        return flatten_metrics(self.compute(), sep)
