"""Action-chain ranking data (A2Gen and its baselines) as a LightningDataModule.

A sample is a chain (see :mod:`recsys.data.chains`) of the split: its user, the item with its side
features, the context of its start event, the user's previous chains (items, their side features as
``history_<field>`` keys aligned with ``history``, and their action slots), and the chain's labels. Tmall chains are (user, item) pairs, so every sample already carries an interaction (the
paper's Tmall tasks ask, given the start, which of favourite / cart / purchase follow and when); KuaiRand
chains are clicked impressions (like / follow / comment / forward, and Leave's time).

A distilled memory (:mod:`recsys.distill`) is a prepared dataset whose ``memory.parquet`` lists the
training chains to use, each with a soft label per action and a weight: its training split is those
chains only (batches carry ``soft_labels`` and ``weights``, and ``relaxed`` where the memory relaxed some
single-valued fields into distributions over their ids); validation and test are the source's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from recsys.data.batches import ChainBatch, jagged_take, make_kjt
from recsys.data.loading import BatchedDataModule, Stage
from recsys.data.chains import Chains, ChainSpec, build_chains, history_slots
from recsys.data.errors import DataError
from recsys.data.prepared import PreparedDataset
from recsys.data.ranking import RankingTables
from recsys.data.splits import SPLIT_NAMES


class ChainTables:
    """Ranking tables plus the chains, their label sequences and history boundaries."""

    def __init__(self, dataset: PreparedDataset, context: list[str] | None,
                 side_features: list[str] | None = None) -> None:
        self.t = RankingTables(dataset, None, context, side_features)
        self.chains: Chains = build_chains(dataset, self.t.events)
        c = self.chains
        self.tokens, self.token_times = c.label_sequences()
        n = len(c)
        new_user = np.r_[True, c.user[1:] != c.user[:-1]]
        user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        new_time = new_user | np.r_[True, c.start[1:] != c.start[:-1]]
        self.history_end = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))  # exclusive
        self.history_begin = user_start
        self.cardinalities = dict(self.t.cardinalities)
        for f in self.t.item_fields:  # the history items' side features share the candidate's tables
            self.cardinalities[f"history_{f}"] = self.t.cardinalities[f]
        self.memory = read_memory(dataset, c, self.cardinalities) if dataset.manifest.extra.get("memory") else None

    @property
    def spec(self) -> ChainSpec:
        return self.chains.spec


#: A relaxed field's column in ``memory.parquet``: ``relaxed_<key>``, a fixed-size list of probabilities per slot.
RELAXED_PREFIX = "relaxed_"


class MemoryRows:
    """The training chains of a distilled memory: chain rows, soft labels ``[m, K]``, weights ``[m]``, and
    per relaxed field its ``[m, V]`` distributions over the field's ``V`` ids."""

    def __init__(self, rows: np.ndarray, soft_labels: np.ndarray, weights: np.ndarray,
                 relaxed: dict[str, np.ndarray] | None = None) -> None:
        self.rows, self.soft_labels, self.weights = rows, soft_labels, weights
        self.relaxed = relaxed or {}


def read_memory(dataset: PreparedDataset, chains: Chains, cardinalities: dict[str, int]) -> MemoryRows:
    """``memory.parquet`` of a distilled memory, checked against the chains it names (row, user, item, start)
    and, for relaxed fields, against the features (``cardinalities``): one distribution over the field's ids
    per slot. A relaxed field the features leave out (``side_features``) is dropped."""
    path = dataset.path / "memory.parquet"
    if not path.is_file():
        raise DataError(path, "the manifest says this is a distilled memory, but memory.parquet is missing")
    frame = pl.read_parquet(path)
    actions = list(chains.spec.actions)
    needed = ["chain", "user", "item", "start", *(f"soft_{a}" for a in actions), "weight"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; expected {needed}")
    rows = frame["chain"].to_numpy().astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(chains)):
        raise DataError(path, f"chain rows outside 0..{len(chains) - 1}: built on another dataset?")
    same = ((chains.user[rows] == frame["user"].to_numpy()) & (chains.item[rows] == frame["item"].to_numpy())
            & (chains.start[rows] == frame["start"].to_numpy()))
    if not same.all():
        bad = int(np.flatnonzero(~same)[0])
        raise DataError(path, f"row {bad}: chain {rows[bad]} is not (user, item, start) of this dataset's "
                              "chains: the memory was built on another dataset")
    if (chains.split[rows] != 0).any():
        raise DataError(path, "the memory holds chains outside the training split")
    soft = np.stack([frame[f"soft_{a}"].to_numpy() for a in actions], axis=1).astype(np.float32)
    relaxed = {}
    for column in (c for c in frame.columns if c.startswith(RELAXED_PREFIX)):
        key = column.removeprefix(RELAXED_PREFIX)
        if key not in cardinalities:
            continue
        size = cardinalities[key]
        if not isinstance(frame[column].dtype, pl.Array) or frame[column].dtype.size != size:
            raise DataError(path, f"column {column!r} is {frame[column].dtype}; expected a list of {size} "
                                  f"probabilities per slot ({key} has {size} ids)")
        probs = frame[column].to_numpy().astype(np.float32)
        bad = np.flatnonzero((probs < 0).any(1) | (np.abs(probs.sum(1) - 1) > 1e-3) | ~np.isfinite(probs).all(1))
        if bad.size:
            raise DataError(path, f"column {column!r}, row {int(bad[0])}: not a probability distribution "
                                  f"(entries >= 0 summing to 1)")
        relaxed[key] = probs
    return MemoryRows(rows, soft, frame["weight"].to_numpy().astype(np.float32), relaxed)


class ChainSamples(Dataset):
    """The chains of one split; ``__getitems__`` builds a whole batch at once."""

    def __init__(self, tables: ChainTables, stage: Stage, *, max_len: int = 50) -> None:
        self.tables, self.max_len = tables, max_len
        self.memory = tables.memory if stage == "train" else None
        if self.memory is not None:
            self.rows = self.memory.rows
        else:
            self.rows = np.flatnonzero(tables.chains.split == SPLIT_NAMES.index(stage))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, index: int) -> ChainBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> ChainBatch:
        tab, c, t = self.tables, self.tables.chains, self.tables.t
        index = np.asarray(indices, dtype=np.int64)
        rows = self.rows[index]
        item = c.item[rows].astype(np.int64)
        user = c.user[rows].astype(np.int64)
        event = c.event[rows]
        ones = np.ones(rows.shape[0], dtype=np.int64)
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {"user": (user, ones), "item": (item, ones)}
        for f in t.item_fields:
            feats[f] = (t.item_side[f][item], ones)
        if t.has_tags:
            tag_len = t.tag_offsets[item + 1] - t.tag_offsets[item]
            feats["tags"] = (t.tag_values[jagged_take(t.tag_offsets[item], tag_len)], tag_len)
        for f in t.user_fields:
            feats[f] = (t.user_side[f][user], ones)
        for f in t.context:
            feats[f] = (t.context_values[f][event], ones)
        end = tab.history_end[rows]
        begin = np.maximum(tab.history_begin[rows], end - self.max_len)
        lengths = end - begin
        hist = jagged_take(begin, lengths)
        hist_items = c.item[hist]
        feats["history"] = (hist_items, lengths)
        for f in t.item_fields:
            feats[f"history_{f}"] = (t.item_side[f][hist_items], lengths)
        flags, times = history_slots(c, hist, np.repeat(rows, lengths))
        token_times = tab.token_times[rows]
        return ChainBatch(
            features=make_kjt(feats),
            history_flags=torch.from_numpy(flags),
            history_times=torch.from_numpy(times),
            tokens=torch.from_numpy(tab.tokens[rows]),
            token_times=torch.from_numpy(token_times),
            occurred=torch.from_numpy(c.occurred[rows].astype(np.float32)),
            times=torch.from_numpy(c.times[rows]),
            users=torch.from_numpy(user),
            soft_labels=None if self.memory is None else torch.from_numpy(self.memory.soft_labels[index]),
            weights=None if self.memory is None else torch.from_numpy(self.memory.weights[index]),
            relaxed=None if not (self.memory and self.memory.relaxed) else
            {k: torch.from_numpy(p[index]) for k, p in self.memory.relaxed.items()},
        )



class ChainDataModule(BatchedDataModule):
    """Action chains of a prepared Tmall or KuaiRand dataset (see the module docstring).

    Args:
        data: folder of a prepared dataset.
        context: event columns used as context features (``None``: ``tab``, ``hour`` where present).
        max_len: history length (previous chains).
        side_features: the item / user side fields to use (``tags`` included), e.g. ``[]`` for ids and
            context only (a feature ablation: what else, such as text vectors, can stand in for them);
            ``None``: all of them.
    """

    def __init__(
        self,
        data: str | Path,
        context: list[str] | None = None,
        max_len: int = 50,
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
        self.tables: ChainTables | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tables is None:
            self.tables = ChainTables(self.dataset, self.hparams.context, self.hparams.side_features)

    @property
    def spec(self) -> ChainSpec:
        self.setup()
        return self.tables.spec

    @property
    def spec_dict(self) -> dict[str, Any]:
        """The chain layout as plain types (what models take, and what checkpoints store)."""
        return {**asdict(self.spec), "actions": list(self.spec.actions)}

    @property
    def feature_cardinalities(self) -> dict[str, int]:
        self.setup()
        return dict(self.tables.cardinalities)

    def samples(self, stage: Stage) -> ChainSamples:
        self.setup()
        return ChainSamples(self.tables, stage, max_len=self.hparams.max_len)

    def label_rates(self) -> torch.Tensor:
        """``[K]`` each action's rate over the training split, as the models learn it: the mean of the
        classification targets (a memory's soft labels, weighted by its weights; else 0/1 occurrence), read
        from the tables without building batches."""
        train = self.samples("train")
        if train.memory is not None:
            targets, weights = train.memory.soft_labels, train.memory.weights
        else:
            targets = self.tables.chains.occurred[train.rows][:, : len(self.spec.actions)]
            weights = np.ones(len(train))
        total = float(weights.sum())
        if total <= 0:
            raise ValueError(f"{self.hparams.data}: no training chains (or zero total weight) to take label rates from")
        return torch.from_numpy((targets.astype(np.float64) * weights[:, None]).sum(0) / total).float()
