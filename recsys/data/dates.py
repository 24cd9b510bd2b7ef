"""Calendar helpers as vectorised integer expressions (no per-row string parsing).

Dates are ``yyyymmdd`` integers, as in KuaiRand's ``date`` column; timestamps are epoch milliseconds.

>>> frame = pl.DataFrame({"d": [20220229, 20240229, 20220431, 20221301, 20220508]})
>>> frame.select(is_valid_yyyymmdd(pl.col("d"))).to_series().to_list()
[False, True, False, False, True]
>>> frame.select(yyyymmdd_to_epoch_ms(pl.col("d").tail(1), utc_offset_hours=8)).item()
1651939200000
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000


def is_valid_ymd(year: pl.Expr, month: pl.Expr, day: pl.Expr, *, min_year: int = 2000, max_year: int = 2099) -> pl.Expr:
    """True where (year, month, day) is a real calendar date with ``min_year <= year <= max_year``."""
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days_in_month = (
        pl.when(month == 2)
        .then(pl.when(leap).then(29).otherwise(28))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    return (
        year.is_between(min_year, max_year)
        & month.is_between(1, 12)
        & (day >= 1)
        & (day <= days_in_month)
    ).fill_null(False)


def is_valid_yyyymmdd(date: pl.Expr) -> pl.Expr:
    """True where an integer ``yyyymmdd`` is a real calendar date in 2000..2099."""
    return is_valid_ymd(date // 10_000, date // 100 % 100, date % 100)


def yyyymmdd_to_epoch_ms(date: pl.Expr, *, utc_offset_hours: int) -> pl.Expr:
    """Epoch ms of local midnight of ``yyyymmdd`` in a fixed UTC offset (valid dates only)."""
    days = pl.date(date // 10_000, date // 100 % 100, date % 100).cast(pl.Int64)
    return days * MS_PER_DAY - utc_offset_hours * MS_PER_HOUR


def epoch_ms_to_yyyymmdd(ts: pl.Expr, *, utc_offset_hours: int) -> pl.Expr:
    """The local calendar date (``yyyymmdd`` int) of epoch-ms ``ts`` in a fixed UTC offset."""
    local = pl.from_epoch(ts + utc_offset_hours * MS_PER_HOUR, time_unit="ms").dt.date()
    return (local.dt.year() * 10_000 + local.dt.month().cast(pl.Int32) * 100 + local.dt.day().cast(pl.Int32)).cast(pl.Int32)


def ms_range(first_year: int = 2000, last_year: int = 2099) -> tuple[int, int]:
    """Epoch-ms bounds ``[lo, hi)`` of the years a timestamp may plausibly fall in."""
    lo = dt.datetime(first_year, 1, 1, tzinfo=dt.UTC)
    hi = dt.datetime(last_year + 1, 1, 1, tzinfo=dt.UTC)
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


def day_to_ts(day: pl.Series, utc_offset_hours: int) -> pl.Series:
    """Epoch ms of local midnight for a column of valid ``yyyymmdd`` days.

    Converts each distinct day once through a lookup table over the day range, not a date computation
    per row (a year of days is a table of ~1,300 entries).
    """
    lo, hi = int(day.min()), int(day.max())
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    table = np.zeros(hi - lo + 1, dtype=np.int64)
    for d in np.unique(day.to_numpy()) if hi - lo > 100_000 else range(lo, hi + 1):
        try:
            midnight = dt.datetime(d // 10_000, d // 100 % 100, d % 100, tzinfo=tz)
        except ValueError:
            continue  # not a calendar date: not in `day`
        table[d - lo] = int(midnight.timestamp()) * 1000
    return pl.Series("ts", table[day.to_numpy() - lo], dtype=pl.Int64)
