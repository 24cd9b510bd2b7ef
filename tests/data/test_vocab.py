from __future__ import annotations

import polars as pl

from recsys.data.vocab import Vocab, count_values


def test_frequency_order_ties_by_value_and_padding():
    v = Vocab.from_values("x", pl.Series([5, 3, 5, 9, 3, None, 7]))
    assert v.raw.to_list() == [3, 5, 7, 9] and len(v) == 5
    assert v.lookup(pl.Series([9, 3, 4, None])).to_list() == [4, 1, 0, 0]


def test_large_and_string_values_use_the_join_path():
    big = pl.Series([10**12, 5, 10**12])
    v = Vocab.from_values("big", big)
    assert v.raw.to_list() == [10**12, 5]
    assert v.lookup(pl.Series([5, 10**12, 6])).to_list() == [2, 1, 0]
    s = Vocab.from_values("s", pl.Series(["b", "a", "b"]))
    assert s.lookup(pl.Series(["a", "zz", None])).to_list() == [2, 0, 0]


def test_weighted_counts_and_round_trip(tmp_path):
    counts = count_values(pl.Series([1, 2, 2]), weights=pl.Series([10, 1, 1]))
    v = Vocab.from_counts("w", counts)
    assert v.raw.to_list() == [1, 2] and v.counts.to_list() == [10, 2]
    v.write(tmp_path)
    back = Vocab.read(tmp_path, "w")
    assert back.raw.to_list() == [1, 2] and back.counts.to_list() == [10, 2]
