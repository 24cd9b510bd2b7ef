"""Action chains: Tmall (user, item) chains with day offsets, KuaiRand clicked impressions with Leave's
time; label sequences in time order; history slots never show actions after the sample's start."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.chains import MS_PER_DAY, history_slots


def test_tmall_chains_match_the_events(prepared_tmall):
    dm = ChainDataModule(prepared_tmall)
    dm.setup()
    c = dm.tables.chains
    ev = dm.tables.t.events
    assert len(c) == ev.select("user", "item").n_unique()
    assert (np.diff(c.user.astype(np.int64)) >= 0).all()
    # each action's offset is the first day with that action, minus the pair's first day
    frame = pl.DataFrame({"user": c.user, "item": c.item, "start": c.start, "purchase": c.times[:, 2]})
    truth = ev.group_by("user", "item").agg(
        pl.col("ts").min().alias("start"),
        ((pl.col("ts").filter((pl.col("actions") & 8) > 0).min() - pl.col("ts").min()) / MS_PER_DAY).alias("p"))
    joined = frame.join(truth, on=["user", "item"])
    assert (joined["start"] == joined["start_right"]).all()
    assert joined.select((pl.col("purchase").fill_nan(None).eq_missing(pl.col("p"))).all()).item()
    assert dm.spec.actions == ("favourite", "cart", "purchase") and dm.spec.terminal == "end"


def test_label_sequences_are_in_time_order_then_terminal(prepared_tmall):
    dm = ChainDataModule(prepared_tmall)
    dm.setup()
    tokens, times = dm.tables.tokens, dm.tables.token_times
    c = dm.tables.chains
    k = len(dm.spec.actions)
    n_actions = c.occurred[:, :k].sum(1)
    rows = np.arange(len(c))
    assert (tokens[rows, n_actions] == k + 1).all()  # the terminal right after the actions
    assert ((tokens > 0).sum(1) == n_actions + 1).all()
    ordered = np.where(np.isnan(times), np.inf, times)
    both = (tokens[:, 1:] > 0) & (tokens[:, 1:] <= k) & (tokens[:, :-1] > 0)
    assert (ordered[:, 1:][both] >= ordered[:, :-1][both]).all()
    multi = np.flatnonzero(n_actions >= 2)
    assert multi.size > 0


def test_history_slots_hide_the_future():
    from recsys.data.chains import SPECS, Chains

    # two chains of one user: the first's purchase (day 5) comes after the second starts (day 2)
    spec = SPECS["tmall"]
    chains = Chains(
        spec=spec, user=np.array([1, 1]), item=np.array([5, 6]),
        start=np.array([0, 2 * MS_PER_DAY]), split=np.array([0, 0]), event=np.array([0, 1]),
        occurred=np.array([[True, False, True, True], [False, False, False, True]]),
        times=np.array([[0.0, np.nan, 5.0, np.nan], [np.nan, np.nan, np.nan, np.nan]], dtype=np.float32))
    flags, times = history_slots(chains, np.array([0]), np.array([1]))
    assert flags.tolist() == [[1.0, 0.0, 0.0, 0.0]]  # the favourite (day 0) shows, the purchase (day 5) not
    assert times.tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_kuairand_chains_and_batches(prepared_kuairand):
    dm = ChainDataModule(prepared_kuairand, max_len=4, batch_size=32)
    dm.setup()
    c = dm.tables.chains
    ev = dm.tables.t.events
    assert len(c) == int(((ev["actions"] & 1) > 0).sum())  # one chain per clicked impression
    assert dm.spec.terminal == "leave" and not dm.spec.action_times_known
    assert np.isnan(c.times[:, :-1]).all()  # no in-video action times in KuaiRand
    leave = c.times[:, -1]
    row = c.event
    play = ev["play_time_ms"].to_numpy()[row].astype(float)
    duration = ev["duration_ms"].to_numpy()[row].astype(float)
    known = ~np.isnan(leave)
    assert np.allclose(leave[known], np.clip(play[known] / duration[known], 0, 5), atol=1e-6)
    batch = next(iter(dm.train_dataloader()))
    hist = batch.features["history"]
    assert batch.history_flags.shape == (hist.values().numel(), dm.spec.num_slots)
    assert torch.equal(batch.features["history_author"].lengths(), hist.lengths())
    assert int(hist.lengths().max()) <= 4


def test_side_features_choose_the_item_and_user_fields(prepared_kuairand):
    """A feature ablation keeps ids, context and history, and only the named side fields (with their
    history copies); a name that is no side field of the dataset is refused with the choices."""
    full = ChainDataModule(prepared_kuairand, max_len=4, batch_size=32)
    ids_only = ChainDataModule(prepared_kuairand, max_len=4, batch_size=32, side_features=[])
    some = ChainDataModule(prepared_kuairand, max_len=4, batch_size=32, side_features=["author", "tags"])
    assert {"author", "tags", "history_author", "user_active_degree"} <= set(full.feature_cardinalities)
    assert set(ids_only.feature_cardinalities) == {"user", "item", "tab", "hour", "history"}
    assert set(some.feature_cardinalities) == {"user", "item", "author", "tags", "tab", "hour", "history",
                                               "history_author"}
    for dm in (ids_only, some):
        batch = next(iter(dm.train_dataloader()))
        assert set(batch.features.keys()) == set(dm.feature_cardinalities)
    base = next(iter(full.train_dataloader()))
    assert torch.equal(batch.features["author"].values(), base.features["author"].values())  # same samples
    with pytest.raises(ValueError, match=r"side_features \['colour'\] are not side fields of .*expected some of"):
        ChainDataModule(prepared_kuairand, side_features=["colour"]).setup()


def test_label_rates_are_the_actions_occurrence_rates_over_training(prepared_tmall):
    dm = ChainDataModule(prepared_tmall)
    train = dm.samples("train")
    occurred = train.__getitems__(list(range(len(train)))).occurred[:, : len(dm.spec.actions)]
    assert torch.allclose(dm.label_rates(), occurred.float().mean(0), atol=1e-6)
