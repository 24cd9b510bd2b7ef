"""Ordering, deduplicating and merging events: the core of ``prepare``.

Every prepared dataset orders a user's events chronologically by one deterministic rule that does not
depend on the order of rows in the raw files:

    user, then ts, then item, then the remaining key columns (Tmall: the action bits),
    then every other column (only rows that tie on the whole key need this).

Tmall has day resolution only, so on one day a user's events are ordered by item index (itself ordered by
item popularity), and all actions of the user on one item in one day merge into one event (its action
flags OR-ed): the day's click, favourite, cart and purchase of an item form one event.

Sorting packs the key columns into one ``uint64`` when their value ranges fit in 64 bits (a single radix-
friendly sort: the fast path for Tmall and KuaiRand-Pure); otherwise it falls back to a multi-column sort.

>>> frame = pl.DataFrame({"user": [2, 1, 1, 1], "ts": [5, 9, 3, 9], "item": [7, 4, 8, 4],
...                       "actions": [1, 2, 1, 2]}, schema_overrides={"actions": pl.UInt16})
>>> out, dropped = order_events(frame, key=["user", "ts", "item"])
>>> out.rows(), dropped          # the exact duplicate (1, 9, 4, 2) is dropped
([(1, 3, 8, 1), (1, 9, 4, 2), (2, 5, 7, 1)], 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def order_events(
    frame: pl.DataFrame,
    *,
    key: Sequence[str],
    drop_duplicates: bool = True,
    merge_on: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Sort ``frame`` by the rule above, drop exact duplicate rows, optionally merge events.

    Args:
        frame: one row per raw event with integer key columns.
        key: sort key, most significant first (e.g. ``["user", "ts", "item"]``).
        drop_duplicates: drop rows equal to an earlier row in every column.
        merge_on: if given (a prefix of ``key``), consecutive rows equal on these columns become one
            event whose ``actions`` bitmask is the OR of theirs; other columns take the first row's value.

    Returns:
        The ordered frame and the number of exact duplicate rows dropped.
    """
    if frame.height == 0:
        return frame, 0
    packed = _pack(frame, key)
    if packed is not None and set(frame.columns) == set(key):
        # Every column is in the key: sort the packed keys themselves and unpack (no gather needed).
        packed[0].sort()
        frame = _unpack(packed, key, frame.schema)
    else:
        order = _sort_order(frame, key, None if packed is None else packed[0])
        frame = frame[order] if order is not None else frame
    rest = [c for c in frame.columns if c not in key]
    frame = _settle_ties(frame, key, rest)
    dropped = 0
    if drop_duplicates:
        same = _equal_to_previous(frame, frame.columns)
        dropped = int(same.sum())
        if dropped:
            frame = frame.filter(pl.Series(~same))
    if merge_on:
        frame = _merge(frame, list(merge_on))
    return frame, dropped


def _sort_order(frame: pl.DataFrame, key: Sequence[str], packed: np.ndarray | None) -> np.ndarray | None:
    """Permutation sorting ``frame`` by ``key`` (``None`` when already sorted)."""
    if packed is not None:
        if np.all(packed[1:] >= packed[:-1]):
            return None
        return np.argsort(packed, kind="stable")
    return frame.select(pl.arg_sort_by(list(key), maintain_order=True)).to_series().to_numpy()


def _pack(frame: pl.DataFrame, key: Sequence[str]) -> tuple[np.ndarray, list[int], list[int]] | None:
    """The key columns packed into one uint64 (lexicographic order kept) with each column's offset and
    bit width, or ``None`` if they need more than 64 bits."""
    lows, widths = [], []
    for name in key:
        col = frame[name]
        if col.null_count() or not col.dtype.is_integer():
            return None
        lo, hi = int(col.min()), int(col.max())
        lows.append(lo)
        widths.append(max(1, (hi - lo).bit_length()))
    if sum(widths) > 64:
        return None
    # In-place numpy ops on two preallocated buffers: no per-column temporaries of 8 bytes per row.
    packed = np.empty(frame.height, dtype=np.uint64)
    tmp = np.empty(frame.height, dtype=np.uint64)
    for i, (name, lo, width) in enumerate(zip(key, lows, widths, strict=True)):
        target = packed if i == 0 else tmp
        np.copyto(target, frame[name].to_numpy(), casting="unsafe")
        if lo:
            target -= np.uint64(lo % (1 << 64))  # wraps for negative lo: the difference is still exact
        if i:
            packed <<= np.uint64(width)
            packed |= tmp
    return packed, lows, widths


def _unpack(packed: tuple[np.ndarray, list[int], list[int]], key: Sequence[str], schema: pl.Schema) -> pl.DataFrame:
    keys, lows, widths = packed
    columns = {}
    shift = sum(widths)
    tmp = np.empty_like(keys)
    for name, lo, width in zip(key, lows, widths, strict=True):
        shift -= width
        np.right_shift(keys, np.uint64(shift), out=tmp)
        tmp &= np.uint64((1 << width) - 1)
        if lo:
            tmp += np.uint64(lo % (1 << 64))
        dtype = schema[name]
        columns[name] = pl.Series(name, tmp.astype(_numpy_dtype(dtype)))
    return pl.DataFrame(columns)


def _numpy_dtype(dtype: pl.DataType) -> np.dtype:
    return pl.Series([], dtype=dtype).to_numpy().dtype


def _equal_to_previous(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Boolean mask: row i equals row i - 1 in every column of ``columns`` (nulls equal nulls)."""
    same = np.ones(frame.height, dtype=bool)
    same[0] = False
    for name in columns:
        col = frame[name]
        if col.dtype.is_numeric() and not col.null_count():
            a = col.to_numpy()
            same[1:] &= a[1:] == a[:-1]
        else:
            same &= frame.select(pl.col(name).eq_missing(pl.col(name).shift(1)).fill_null(False)).to_series().to_numpy()
    return same


def _settle_ties(frame: pl.DataFrame, key: Sequence[str], rest: Sequence[str]) -> pl.DataFrame:
    """Order rows that tie on the whole key by their other columns, so the result never depends on
    the input order and exact duplicates are adjacent. Ties are rare: only their runs are sorted."""
    if not rest:
        return frame
    tie = _equal_to_previous(frame, key)
    if not tie.any():
        return frame
    in_run = tie.copy()
    in_run[:-1] |= tie[1:]  # the first row of each tied run too
    rows = np.flatnonzero(in_run)
    # Runs whose rows already agree on every other column need no reordering (the common case:
    # exact duplicates and Tmall's repeated same-day actions).
    sub = frame[rows]
    if _equal_to_previous(sub, frame.columns)[tie[rows]].all():
        return frame
    run_id = np.cumsum(~tie[rows])
    settled = (
        sub.with_columns(pl.Series("_run", run_id), pl.Series("_row", rows))
        .sort(["_run", *rest], nulls_last=True, maintain_order=True)
    )
    perm = np.arange(frame.height)
    perm[rows] = settled["_row"].to_numpy()
    return frame[perm]


def _merge(frame: pl.DataFrame, merge_on: list[str]) -> pl.DataFrame:
    """One event per run of rows equal on ``merge_on``: actions OR-ed, other columns from the first row."""
    same = _equal_to_previous(frame, merge_on)
    if not same.any():
        return frame
    starts = np.flatnonzero(~same)
    actions = np.bitwise_or.reduceat(frame["actions"].to_numpy(), starts)
    return frame[starts].with_columns(pl.Series("actions", actions, dtype=frame["actions"].dtype))
