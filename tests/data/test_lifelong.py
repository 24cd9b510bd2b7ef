"""Lifelong three-stream samples: streams partition the user's past before the target, newest last."""

from __future__ import annotations

import os

import numpy as np
import torch

from recsys.data.lifelong import DURATION_EDGES_S, MAX_TAGS, LifelongDataModule, read_item_attributes
from recsys.data.retrieval import positive_sequences


def test_streams_partition_the_past(prepared_lifelong):
    dm = LifelongDataModule(prepared_lifelong, recent=8, mid=32, max_train_per_user=5)
    samples = dm.samples("train")
    assert len(samples) <= 5 * 30 and len(samples) > 0
    batch = samples.__getitems__(list(range(len(samples))))
    seq = positive_sequences(dm.dataset, "click")
    for i in range(0, len(samples), 7):
        target = samples.targets[i]
        start = seq.offsets[samples.owner[i]]
        past = seq.item[start:target]
        parts = [batch.features[s] for s in ("life", "mid", "recent")]
        got = np.concatenate([p.values()[p.offsets()[i]:p.offsets()[i + 1]].numpy() for p in parts])
        assert got.tolist() == past.tolist()  # life + mid + recent = everything before, in order
        assert int(parts[2].lengths()[i]) == min(8, past.size)
        assert batch.targets[i] == seq.item[target]
    assert (batch.ages["recent"] >= 0).all() and batch.actions["recent"].dtype == torch.int64
    assert torch.equal(batch.features["recent_author"].lengths(), batch.features["recent"].lengths())
    assert float(batch.features["life"].lengths().float().mean()) > 10  # long histories reach the lifecycle stream


def test_semantic_ids_are_built_once_and_cover_the_catalogue(prepared_lifelong):
    from recsys.models.semantic_ids import SemanticIds

    dm = LifelongDataModule(prepared_lifelong, sid_levels=2, sid_codebook=16)
    path = dm.semantic_ids_path
    sids = SemanticIds.load(path)
    assert sids.codes.shape[0] == dm.num_items and (sids.codes[1:] >= 0).all()
    assert len(set(map(tuple, sids.codes[1:].tolist()))) == dm.num_items - 1  # distinct after collisions
    stamp = os.stat(path).st_mtime_ns
    assert dm.semantic_ids_path == path and os.stat(path).st_mtime_ns == stamp  # cached, not rebuilt


def test_spread_training_targets_cover_the_training_period(prepared_lifelong):
    """``train_targets="spread"``: the same number of targets per user as ``"latest"``, evenly spaced over
    the user's training events instead of the last ones."""
    common = dict(recent=8, mid=32, max_train_per_user=10)
    latest = LifelongDataModule(prepared_lifelong, **common).samples("train")
    spread = LifelongDataModule(prepared_lifelong, train_targets="spread", **common).samples("train")
    assert len(latest) == len(spread)
    for user in np.unique(spread.owner)[:10]:
        a, b = latest.targets[latest.owner == user], spread.targets[spread.owner == user]
        assert len(a) == len(b) <= 10
        assert b.min() < a.min() and b.max() == a.max()  # from early on, up to the last training event
        gaps = np.diff(b)
        assert gaps.max() <= 2 * gaps.min() + 1  # evenly spaced


def test_item_attributes_tabulate_tags_and_duration_once(prepared_lifelong):
    """Row i of ``tags`` holds item i's first MAX_TAGS tag ids (0 = none), of ``duration`` its video's log2
    bucket in seconds (0 = unknown); the file is written once and read back as it was computed."""
    dm = LifelongDataModule(prepared_lifelong)
    path = dm.item_attributes_path
    attrs = read_item_attributes(path)
    items = dm.dataset.items()
    tags, n_tags = attrs["tags"]
    assert tags.shape == (dm.num_items, MAX_TAGS) and n_tags == dm.dataset.manifest.vocab_sizes["tags"]
    for i in (1, 2, dm.num_items // 2, dm.num_items - 1):
        row = items["tags"][i]
        listed = [] if row is None else row.to_list()[:MAX_TAGS]
        assert tags[i].tolist() == [*listed, *[0] * (MAX_TAGS - len(listed))]
    assert tags[0].tolist() == [0] * MAX_TAGS and int(tags.max()) < n_tags and bool((tags[1:, 0] > 0).any())
    duration, n_dur = attrs["duration"]
    seconds = items["video_duration"].to_numpy() / 1000
    for i in range(1, 200):
        want = 0 if not seconds[i] > 0 else 1 + int(np.searchsorted(DURATION_EDGES_S, seconds[i], side="right"))
        assert int(duration[i, 0]) == want
    assert n_dur == len(DURATION_EDGES_S) + 2 and int(duration.max()) < n_dur and int(duration[0, 0]) == 0
    stamp = os.stat(path).st_mtime_ns
    assert LifelongDataModule(prepared_lifelong).item_attributes_path == path and os.stat(path).st_mtime_ns == stamp



def test_events_carry_their_play_time(prepared_lifelong, tmp_path):
    """Every sequence event's play time is its own row's ``play_time_ms`` in the event table (matched on
    user, item and time), and a stream's ``plays`` are those of its events in seconds; an event table
    whose rows no longer line up with sequences/ is refused."""
    import shutil

    import polars as pl
    import pytest

    from recsys.data.errors import DataError
    from recsys.data.lifelong import PLAY_COLUMN

    dm = LifelongDataModule(prepared_lifelong, recent=8, mid=32, max_train_per_user=5)
    assert dm.event_play_time
    dm.setup()
    seq = dm._seq
    ours = pl.DataFrame({"user": np.repeat(seq.users, seq.lengths), "item": seq.item, "ts": seq.ts,
                         "ours": seq.values[PLAY_COLUMN]})
    events = dm.dataset.scan_events().select("user", "item", "ts", PLAY_COLUMN).collect()
    # (user, item, ts) is not a key (an item shown twice in one millisecond): ours must be one of its rows'
    joined = ours.with_row_index("row").join(events, on=["user", "item", "ts"], how="left")
    found = joined.group_by("row").agg(pl.col("ours").eq_missing(pl.col(PLAY_COLUMN)).any())
    assert found.height == ours.height and bool(found["ours"].all())
    assert ours["ours"].n_unique() > 100  # real per-event values, not a constant
    samples = dm.samples("train")
    batch = samples.__getitems__(list(range(len(samples))))
    jt = batch.features["recent"]
    for i in range(0, len(samples), 9):
        n, target = int(jt.lengths()[i]), samples.targets[i]
        lo = int(jt.offsets()[i])
        want = np.nan_to_num(seq.values[PLAY_COLUMN][target - n:target] / 1000.0)
        np.testing.assert_allclose(batch.plays["recent"][lo:lo + n].numpy(), want, rtol=1e-6)
    assert all(batch.plays[s].shape == batch.ages[s].shape for s in ("recent", "mid", "life"))
    copy = tmp_path / "copy"  # a user's first two events swapped in the event table
    shutil.copytree(prepared_lifelong, copy)
    part = sorted((copy / "events").glob("*.parquet"))[0]
    frame = pl.read_parquet(part)
    first = frame["user"][0]
    second = int(np.flatnonzero(frame["user"].to_numpy() == first)[1])
    order = [second, *[r for r in range(frame.height) if r != second]]
    frame[order].write_parquet(part)
    with pytest.raises(DataError, match="do not match sequences"):
        LifelongDataModule(copy).setup()
