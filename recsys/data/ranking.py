"""Ranking data: (user, history, candidate item, context) -> one 0/1 label per action, as a DataModule.

Every event of a split is a sample: its user, the candidate item with the item's side features, the
event's context (KuaiRand: ``tab``, ``hour``), and the user's history, the last ``max_len`` *positive*
events strictly before it in time (events of the same request or, for Tmall, of the same day are never
in each other's history, so no label leaks). Labels are the event's action flags in the manifest's order.

Where the log holds only positive interactions (Tmall: every row is an action), ``negatives`` sampled
items per event are added as samples with all-zero labels, sharing the event's user, history and context.

Features go into one ``KeyedJaggedTensor`` per batch:

=================  ==========================================================
key                values per sample
=================  ==========================================================
``user``           1: the user index
``item``           1: the candidate item index
item categoricals  1 each (e.g. ``author``, ``category``), ``tags`` jagged
user categoricals  1 each (e.g. ``user_active_degree``, ``age_range``)
context            1 each (e.g. ``tab``, ``hour``)
``history``        0..max_len previous positive items, oldest first
=================  ==========================================================

:attr:`RankingDataModule.feature_cardinalities` gives each key's vocabulary size for embedding tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from recsys.data.batches import RankingBatch, jagged_take, make_kjt
from recsys.data.loading import BatchedDataModule, Stage
from recsys.data.prepared import PreparedDataset
from recsys.data.sampling import NegativeSampler
from recsys.data.splits import SPLIT_NAMES

_CONTEXT = ("tab", "hour")


class RankingTables:
    """Everything the ranking samples read, loaded once: user-ordered events and side tables."""

    def __init__(self, dataset: PreparedDataset, positive: str | list[str] | None, context: list[str] | None,
                 side_features: list[str] | None = None) -> None:
        self.dataset = dataset
        schema = dataset.scan_events().collect_schema()
        self.context = [c for c in (_CONTEXT if context is None else context) if c in schema]
        extra = [c for c in ("play_time_ms", "duration_ms") if c in schema]
        cols = ["user", "item", "ts", "actions", "split", *self.context, *extra]
        # Stable by user: each user's events in tie-rule order, exactly like the sequences.
        events = dataset.scan_events().select(cols).collect().sort("user", maintain_order=True)
        self.events = events
        self.user = events["user"].to_numpy()
        self.item = events["item"].to_numpy()
        self.ts = events["ts"].to_numpy()
        self.actions = events["actions"].to_numpy()
        self.split = events["split"].to_numpy()
        self.context_values = {c: events[c].to_numpy().astype(np.int64) for c in self.context}
        n = self.user.shape[0]
        new_user = np.r_[True, self.user[1:] != self.user[:-1]]
        user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        # First event of each (user, ts) tie group: history stops before it.
        new_time = new_user | np.r_[True, self.ts[1:] != self.ts[:-1]]
        tie_start = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))
        is_pos = (self.actions & dataset.action_mask(positive)) != 0
        pos_before = np.r_[0, np.cumsum(is_pos)]  # positives strictly before each position
        self.positive_items = self.item[is_pos]
        self.history_end = pos_before[tie_start]  # exclusive, into positive_items
        self.history_begin = pos_before[user_start]
        items = dataset.items()
        users = dataset.users()
        vocab = dataset.manifest.vocab_sizes
        self.item_fields = [c for c in items.columns if c in vocab and c not in ("item", "user") and items[c].dtype != pl.List]
        self.user_fields = [c for c in users.columns if c in vocab and c not in ("item", "user")]
        self.has_tags = "tags" in items.columns
        if side_features is not None:  # a feature ablation: only these side fields (ids and context stay)
            available = self.item_fields + ["tags"] * self.has_tags + self.user_fields
            unknown = sorted(set(side_features) - set(available))
            if unknown:
                raise ValueError(f"side_features {unknown} are not side fields of {dataset.path}; "
                                 f"expected some of {available}")
            self.item_fields = [c for c in self.item_fields if c in side_features]
            self.user_fields = [c for c in self.user_fields if c in side_features]
            self.has_tags = self.has_tags and "tags" in side_features
        self.item_side = {c: items[c].to_numpy().astype(np.int64) for c in self.item_fields}
        self.user_side = {c: users[c].to_numpy().astype(np.int64) for c in self.user_fields}
        if self.has_tags:
            tags = items["tags"]
            self.tag_offsets = np.r_[0, np.cumsum(tags.list.len().fill_null(0).to_numpy())]
            self.tag_values = tags.explode().drop_nulls().to_numpy().astype(np.int64)
        self.item_counts = np.bincount(self.item[self.split == 0], minlength=dataset.num_items)
        self.cardinalities = {
            "user": dataset.num_users,
            "item": dataset.num_items,
            **{c: vocab[c] for c in self.item_fields},
            **({"tags": vocab["tags"]} if self.has_tags else {}),
            **{c: vocab[c] for c in self.user_fields},
            **{c: int(self.context_values[c].max(initial=0)) + 1 for c in self.context},
            "history": dataset.num_items,
        }


class RankingSamples(Dataset):
    """The samples of one split; ``__getitems__`` builds a whole batch at once."""

    def __init__(
        self,
        tables: RankingTables,
        stage: Stage,
        *,
        max_len: int = 50,
        negatives: int = 0,
        sampler: NegativeSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.t, self.max_len, self.negatives, self.sampler, self.seed = tables, max_len, negatives, sampler, seed
        if negatives and sampler is None:
            raise ValueError("negatives > 0 needs a sampler")
        self.events = np.flatnonzero(tables.split == SPLIT_NAMES.index(stage))

    def __len__(self) -> int:
        return int(self.events.shape[0]) * (1 + self.negatives)

    def __getitem__(self, index: int) -> RankingBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> RankingBatch:
        t = self.t
        idx = np.asarray(indices, dtype=np.int64)
        e = self.events[idx // (1 + self.negatives)]
        is_negative = (idx % (1 + self.negatives)) > 0
        item = t.item[e].astype(np.int64)
        if is_negative.any():
            item[is_negative] = self.sampler.sample((int(is_negative.sum()),), idx[is_negative], self.seed)
        user = t.user[e].astype(np.int64)
        ones = np.ones(e.shape[0], dtype=np.int64)
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {"user": (user, ones), "item": (item, ones)}
        for c in t.item_fields:
            feats[c] = (t.item_side[c][item], ones)
        if t.has_tags:
            tag_len = t.tag_offsets[item + 1] - t.tag_offsets[item]
            feats["tags"] = (t.tag_values[jagged_take(t.tag_offsets[item], tag_len)], tag_len)
        for c in t.user_fields:
            feats[c] = (t.user_side[c][user], ones)
        for c in t.context:
            feats[c] = (t.context_values[c][e], ones)
        end = t.history_end[e]
        begin = np.maximum(t.history_begin[e], end - self.max_len)
        feats["history"] = (t.positive_items[jagged_take(begin, end - begin)], end - begin)
        bits = t.actions[e].astype(np.int64)
        n_actions = len(t.dataset.actions)
        labels = ((bits[:, None] >> np.arange(n_actions)) & 1).astype(np.float32)
        labels[is_negative] = 0.0
        return RankingBatch(make_kjt(feats), torch.from_numpy(labels), torch.from_numpy(user))



class RankingDataModule(BatchedDataModule):
    """Multi-action ranking over a prepared dataset (see the module docstring).

    Args:
        data: folder of a prepared dataset.
        positive: actions that put an event into later histories (``None``: any action).
        context: event columns used as context features (``None``: those of ``tab``, ``hour`` present).
        max_len: history length.
        negatives: sampled negative items per training event (for logs of positives only, e.g. Tmall).
        eval_negatives: the same for validation and test (defaults to ``negatives``).
        sampler: ``"uniform"`` or ``"popularity"`` (training-period counts ** 0.75).
        side_features: the item / user side fields to use (``tags`` included), e.g. ``[]`` for ids and
            context only; ``None``: all of them.
    """

    def __init__(
        self,
        data: str | Path,
        positive: str | list[str] | None = None,
        context: list[str] | None = None,
        max_len: int = 50,
        negatives: int = 0,
        eval_negatives: int | None = None,
        sampler: Literal["uniform", "popularity"] = "popularity",
        side_features: list[str] | None = None,
        batch_size: int = 512,
        eval_batch_size: int = 2048,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        data = str(data)  # plain types only in checkpoints: they load with torch.load(weights_only=True)
        self.save_hyperparameters()
        self.dataset = PreparedDataset(data)
        self.tables: RankingTables | None = None
        self._samples: dict[str, RankingSamples] = {}

    @property
    def actions(self) -> tuple[str, ...]:
        return self.dataset.actions

    @property
    def feature_cardinalities(self) -> dict[str, int]:
        self.setup()
        return dict(self.tables.cardinalities)

    def setup(self, stage: str | None = None) -> None:
        if self.tables is not None:
            return
        hp = self.hparams
        self.tables = RankingTables(self.dataset, hp.positive, hp.context, hp.side_features)
        sampler = NegativeSampler(self.dataset.num_items, hp.sampler,
                                  counts=self.tables.item_counts if hp.sampler == "popularity" else None)
        eval_neg = hp.negatives if hp.eval_negatives is None else hp.eval_negatives
        for name in ("train", "valid", "test"):
            self._samples[name] = RankingSamples(
                self.tables, name, max_len=hp.max_len, negatives=hp.negatives if name == "train" else eval_neg,
                sampler=sampler, seed=hp.seed,
            )

    def samples(self, stage: Stage) -> RankingSamples:
        self.setup()
        return self._samples[stage]
