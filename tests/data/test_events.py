"""``order_events``: the packed-key and multi-column paths agree, ties are settled by content, exact
duplicates are dropped wherever they sit in the input, and merging ORs the action bits."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data.events import order_events, value_ranges


def random_events(n: int, seed: int, *, wide: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({
        "day": rng.integers(20220401, 20220405, n).astype(np.int32),
        "user": rng.integers(1, 30, n).astype(np.uint32),
        "ts": rng.integers(0, 2**40 if wide else 50, n),
        "item": rng.integers(1, 40, n).astype(np.uint32),
        "actions": rng.integers(0, 4, n).astype(np.uint16),
        "play": rng.integers(0, 3, n).astype(np.uint32),
    })
    dup = frame.sample(n // 10, seed=seed)  # exact duplicates, scattered
    return pl.concat([frame, dup]).sample(fraction=1.0, shuffle=True, seed=seed)


def reference(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    unique = frame.unique(maintain_order=False)
    return unique.sort(frame.columns), frame.height - unique.height


def test_matches_a_full_sort_with_dedup():
    for wide in (False, True):  # False: packed uint64 key; True: > 64 bits, multi-column fallback
        frame = random_events(3000, seed=1, wide=wide)
        got, dropped = order_events(frame, key=["day", "user", "ts", "item"])
        expected, expected_dropped = reference(frame)
        assert dropped == expected_dropped > 0
        assert got.equals(expected)


def test_independent_of_input_order():
    frame = random_events(2000, seed=2)
    a, _ = order_events(frame, key=["day", "user", "ts", "item"])
    b, _ = order_events(frame.reverse(), key=["day", "user", "ts", "item"])
    assert a.equals(b)


def test_all_key_columns_path_and_merge():
    frame = pl.DataFrame({
        "day": [2, 1, 1, 1, 1], "user": [1, 1, 1, 1, 2], "item": [5, 7, 7, 7, 7],
        "actions": [1, 4, 1, 4, 2],
    }, schema_overrides={"actions": pl.UInt16})
    out, dropped = order_events(frame, key=["day", "user", "item", "actions"], merge_on=["day", "user", "item"])
    assert dropped == 1  # (1, 1, 7, 4) twice
    assert out.rows() == [(1, 1, 7, 5), (1, 2, 7, 2), (2, 1, 5, 1)]


def test_keep_duplicates():
    frame = random_events(500, seed=3)
    out, dropped = order_events(frame, key=["day", "user", "ts", "item"], drop_duplicates=False)
    assert dropped == 0 and out.height == frame.height


def merge_reference(frame: pl.DataFrame, merge_on: list[str], drop_duplicates: bool) -> tuple[pl.DataFrame, int]:
    unique = frame.unique() if drop_duplicates else frame
    merged = unique.group_by(merge_on).agg(pl.col("actions").bitwise_or()).sort(merge_on)
    return merged.select(frame.columns), frame.height - unique.height


def test_packed_dedup_and_merge_match_a_group_by():
    """The all-key path deduplicates and merges on packed keys: signed, negative and narrow columns."""
    rng = np.random.default_rng(4)
    n = 5000
    frame = pl.DataFrame({
        "day": rng.integers(20141101, 20141111, n).astype(np.int32),
        "user": rng.integers(-3, 40, n).astype(np.int64),  # negative values need sign extension
        "item": rng.integers(0, 70, n).astype(np.int16),
        "actions": (1 << rng.integers(0, 4, n)).astype(np.uint16),
    })
    key, merge_on = ["day", "user", "item", "actions"], ["day", "user", "item"]
    for drop in (True, False):
        got, dropped = order_events(frame, key=key, merge_on=merge_on, drop_duplicates=drop)
        expected, expected_dropped = merge_reference(frame, merge_on, drop)
        assert dropped == expected_dropped and (dropped > 0) == drop
        assert got.schema == frame.schema and got.equals(expected)
    got, _ = order_events(frame, key=key)
    assert got.equals(frame.unique().sort(key))
    try:
        order_events(frame, key=key, merge_on=["user", "day"])
    except ValueError as e:
        assert "prefix" in str(e)
    else:
        raise AssertionError("a merge_on that is not a prefix of the key must be refused")


def test_value_ranges_cut_the_first_key_into_independently_ordered_parts():
    """Ordering each range of days alone and concatenating gives the order of the whole frame."""
    frame = random_events(4000, seed=5)
    key, merge_on = ["day", "user", "item", "actions"], ["day", "user", "item"]
    frame = frame.select(key)
    whole, dropped = order_events(frame, key=key, merge_on=merge_on)
    for parts in (2, 3):
        ranges = value_ranges(frame["day"], parts)
        assert len(ranges) == parts and ranges[0][0] == frame["day"].min() and ranges[-1][1] == frame["day"].max() + 1
        assert all(a < b == c for (a, b), (c, _) in zip(ranges, ranges[1:]))
        sizes = [frame.filter(pl.col("day").is_between(a, b, closed="left")).height for a, b in ranges]
        assert max(sizes) < 2 * frame.height / parts  # about equal (4 days, about 1,100 rows each)
        done = [order_events(frame.filter(pl.col("day").is_between(a, b, closed="left")), key=key, merge_on=merge_on)
                for a, b in ranges]
        assert pl.concat([f for f, _ in done]).equals(whole) and sum(n for _, n in done) == dropped
    assert value_ranges(frame["day"], 9) == [(d, d + 1) for d in range(20220401, 20220405)]  # one value each at most
    assert value_ranges(pl.Series([7, 7, 7]), 2) == [] and value_ranges(pl.Series([1, None, 2]), 2) == []
