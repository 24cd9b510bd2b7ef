"""Evaluation metrics.

* :mod:`recsys.metrics.ranking`: HR@K, NDCG@K, Recall@K, MRR over the full catalogue or sampled
  candidates, single or multiple targets, with a pessimistic tie rule; :class:`RankingMetrics`.
* :mod:`recsys.metrics.classification`: AUC, user-weighted GAUC, LogLoss; :class:`MultiActionMetrics`
  for one table of them per action (click, like, ...).
* :mod:`recsys.metrics.table`: :func:`format_table`, aligned markdown tables for the CLI.

The streaming classes are ``torchmetrics.Metric`` subclasses, so they sync across DDP ranks.
"""

from recsys.metrics.classification import (
    LOGLOSS_EPS,
    MultiActionMetrics,
    auc,
    flatten_metrics,
    gauc,
    group_auc,
    log_loss,
    log_loss_with_logits,
)
from recsys.metrics.ranking import (
    RankingMetrics,
    jagged_to_mask,
    metric_names,
    metrics_from_rank,
    multi_target_metrics,
    ranking_metrics,
    target_rank,
)
from recsys.metrics.regression import MaskedMAE
from recsys.metrics.table import format_cell, format_table

__all__ = [
    "LOGLOSS_EPS",
    "MaskedMAE",
    "MultiActionMetrics",
    "RankingMetrics",
    "auc",
    "flatten_metrics",
    "format_cell",
    "format_table",
    "gauc",
    "group_auc",
    "jagged_to_mask",
    "log_loss",
    "log_loss_with_logits",
    "metric_names",
    "metrics_from_rank",
    "multi_target_metrics",
    "ranking_metrics",
    "target_rank",
]
