"""Action chains for action-aware ranking (A2Gen): which actions a user takes on an item, in which order
and when, built from a prepared dataset.

A2Gen (Li et al., SIGIR 2026, arXiv 2604.25834; its code's ``data_loader.py``) models a consumption as a
chain ``start -> action_1 -> ... -> Leave`` with a time per action. The public datasets give:

* **Tmall**: a chain per (user, item). ``start`` is the first event of the pair; the chain's actions are
  ``favourite, cart, purchase``, each at its first day, as an offset in **days** from the start (IJCAI-15 has
  day resolution: actions of the start day have offset 0 and are ordered by the funnel click < favourite <
  cart < purchase). The chain ends with ``end`` (its time is not observed).
* **MovieLens**: a chain per rating, Tmall's way (one per (user, item)): its one action ``like`` (rating >= 4)
  at offset 0 days, then ``end``.
* **KuaiRand**: a chain per clicked impression (the video started playing). Its actions are ``like,
  follow, comment, forward``; KuaiRand has **no times of actions inside a video**, so their times are unknown
  (masked from the time losses and metrics) and they are listed in that fixed order; the chain ends with
  ``leave`` at ``play_time_ms / duration_ms`` (fraction of the video; unknown when the duration is
  missing). Only Leave's time is a real target.

Token ids of a chain's label sequence: ``0`` padding, ``1..K`` the K actions, ``K + 1`` the terminal
(``end`` / ``leave``), ``K + 2`` the ``start`` token that opens an autoregressive decoder's input. The
sequence has ``K + 1`` positions: the actions that occurred (in time order), the terminal, padding.

A sample's history is the user's previous chains that started strictly before it (last ``max_len``), each
with ``K + 1`` action slots: a flag (the action happened *before the sample's start*: no future leaks in)
and its time offset within that history chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data.prepared import PreparedDataset

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class ChainSpec:
    actions: tuple[str, ...]  # the chain's actions after start, in tie order
    terminal: str  # "end" (Tmall) or "leave" (KuaiRand)
    time_unit: str  # "days" or "video fraction"
    action_times_known: bool  # False: only the terminal's time is observed

    @property
    def num_slots(self) -> int:
        """Actions plus the terminal."""
        return len(self.actions) + 1

    @property
    def vocab_size(self) -> int:
        """Token ids: padding, actions, terminal, start."""
        return len(self.actions) + 3

    @property
    def start_token(self) -> int:
        return len(self.actions) + 2


SPECS = {
    "tmall": ChainSpec(("favourite", "cart", "purchase"), "end", "days", True),
    "kuairand": ChainSpec(("like", "follow", "comment", "forward"), "leave", "video fraction", False),
    "movielens": ChainSpec(("like",), "end", "days", True),
}


def spec_for(dataset: str) -> ChainSpec:
    if dataset.startswith("movielens"):
        return SPECS["movielens"]
    return SPECS["tmall" if dataset.startswith("tmall") else "kuairand"]


@dataclass
class Chains:
    """One row per chain, ordered by user, then start time, then item (flat numpy arrays)."""

    spec: ChainSpec
    user: np.ndarray  # [C] user index
    item: np.ndarray  # [C] item index
    start: np.ndarray  # [C] epoch ms of the chain's start
    split: np.ndarray  # [C] 0 train, 1 valid, 2 test (the split of the start event)
    event: np.ndarray  # [C] row of the chain's start event in the user-ordered event table
    occurred: np.ndarray  # [C, K + 1] bool: each action, then the terminal (always true)
    times: np.ndarray  # [C, K + 1] float32 time of each action and the terminal (NaN: unknown / absent)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def label_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``[C, K + 1]`` and their times ``[C, K + 1]`` (NaN: not a timed position).

        Actions that occurred come first in order of time (ties: the spec's order), then the terminal."""
        k = len(self.spec.actions)
        t = np.where(self.occurred[:, :k], np.nan_to_num(self.times[:, :k], nan=0.0), np.inf)
        order = np.argsort(t + np.arange(k) * 1e-6, axis=1, kind="stable")  # time, then spec order
        present = np.take_along_axis(self.occurred[:, :k], order, axis=1)
        tokens = np.where(present, order + 1, 0)
        times = np.where(present, np.take_along_axis(self.times[:, :k], order, axis=1), np.nan)
        n_present = present.sum(1)
        tokens = np.concatenate([tokens, np.zeros((len(self), 1), tokens.dtype)], axis=1)
        times = np.concatenate([times, np.full((len(self), 1), np.nan, np.float32)], axis=1).astype(np.float32)
        rows = np.arange(len(self))
        tokens[rows, n_present] = k + 1  # the terminal right after the last action
        times[rows, n_present] = self.times[:, k]
        return tokens.astype(np.int64), times


def build_chains(dataset: PreparedDataset, events: pl.DataFrame) -> Chains:
    """Chains of a prepared dataset from its user-ordered events (columns user, item, ts, split, actions,
    and for KuaiRand play_time_ms, duration_ms)."""
    spec = spec_for(dataset.manifest.dataset)
    bits = {name: 1 << i for i, name in enumerate(dataset.actions)}
    k = len(spec.actions)
    frame = events.with_row_index("_event")
    if spec.terminal == "end":  # Tmall: one chain per (user, item)
        first = [
            (pl.col("ts").filter((pl.col("actions") & bits[a]) > 0).min() - pl.col("ts").min()).alias(a)
            for a in spec.actions
        ]
        chains = (
            frame.group_by("user", "item", maintain_order=True)
            .agg(pl.col("ts").min().alias("start"), pl.col("split").first(), pl.col("_event").first(), *first)
            .sort("user", "start", "item", maintain_order=True)
        )
        offsets = np.stack([chains[a].cast(pl.Float64).to_numpy() for a in spec.actions], axis=1) / MS_PER_DAY
        occurred = ~np.isnan(offsets)
        terminal_time = np.full(len(chains), np.nan)
    else:  # KuaiRand: one chain per clicked impression
        chains = frame.filter((pl.col("actions") & bits["click"]) > 0).rename({"ts": "start"})
        occurred = np.stack([((chains["actions"] & bits[a]) > 0).to_numpy() for a in spec.actions], axis=1)
        offsets = np.full(occurred.shape, np.nan)
        duration = chains["duration_ms"].cast(pl.Float64).to_numpy()
        terminal_time = np.clip(chains["play_time_ms"].cast(pl.Float64).to_numpy() / duration, 0.0, 5.0)
    return Chains(
        spec=spec,
        user=chains["user"].to_numpy(),
        item=chains["item"].to_numpy(),
        start=chains["start"].to_numpy(),
        split=chains["split"].to_numpy(),
        event=chains["_event"].to_numpy().astype(np.int64),
        occurred=np.concatenate([occurred, np.ones((len(chains), 1), bool)], axis=1),
        times=np.concatenate([offsets, terminal_time[:, None]], axis=1).astype(np.float32),
    )


def history_slots(chains: Chains, hist: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Action slots of history chains ``hist`` seen from the samples ``target`` (one per history entry).

    Returns flags ``[H, K + 1]`` (the action had happened before the target chain started) and times
    ``[H, K + 1]`` (offset within the history chain; 0 where unknown or hidden).
    """
    times = chains.times[hist]
    known = ~np.isnan(times)
    if chains.spec.time_unit == "days":
        absolute = chains.start[hist][:, None] + np.nan_to_num(times) * MS_PER_DAY
        visible = chains.occurred[hist] & known & (absolute < chains.start[target][:, None])
        visible[:, -1] = False  # Tmall's "end" is not an observed action
    else:
        visible = chains.occurred[hist].copy()
    return visible.astype(np.float32), np.where(visible & known, times, 0.0).astype(np.float32)
