"""What ``prepare`` needs from a raw dataset: the interface every reader implements.

A source knows its files and their exact schemas, scans its interaction logs lazily into raw columns of
narrow dtypes, names the value rules those columns must satisfy, and turns a batch of raw rows (with user
and item ids already remapped to vocabulary indices) into normalised events::

    user  item  ts (epoch ms)  day (yyyymmdd)  actions (bitmask over `actions`)  [extra event columns]

Item and user side tables come from the source too, keyed by raw id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from recsys.data.csvfile import Check
from recsys.data.schemas import Schema


class RawSource(Protocol):
    dataset: str
    #: Action names in bit order of the ``actions`` bitmask.
    actions: tuple[str, ...]
    utc_offset_hours: int
    #: Sort key of the event table, ``day`` and ``user`` first (see :mod:`recsys.data.events`), and the
    #: columns whose equal runs merge into one event (``None``: no merging).
    order_key: tuple[str, ...]
    merge_on: tuple[str, ...] | None
    #: Raw log columns holding the user and item ids.
    user_column: str
    item_column: str
    #: Log columns that are features of the item (merged into the item table, not kept per event).
    item_columns_in_log: tuple[str, ...]
    #: Approximate bytes per CSV row of the logs, to size buckets before reading.
    bytes_per_row: int
    #: Rows processed in memory at once by default; larger logs are streamed through user buckets.
    rows_per_bucket: int
    log_schema: Schema
    #: The logs' columns with the narrow dtypes they are parsed as (overflow is a located parse error).
    read_schema: Schema
    null_values: Sequence[str]
    checks: Sequence[Check]

    def check(self) -> None:
        """Raise a DataError if a file is missing or a header differs from the schema."""

    def log_files(self) -> list[Path]: ...

    def input_files(self) -> list[Path]:
        """Every file the prepared dataset depends on (logs and feature files)."""

    def scan_logs(self) -> pl.LazyFrame:
        """Raw log rows (raw column names, narrow dtypes): what the checks and ``normalize`` read."""

    def normalize(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Raw rows (``user``/``item`` already indices) -> ``user, item, day, actions, ...``."""

    def finish_events(self, events: pl.DataFrame) -> pl.DataFrame:
        """Columns derived after ordering (e.g. ``ts`` where the log has day resolution)."""

    def item_features(self, log_items: pl.DataFrame | None) -> SideTable:
        """Item side features; ``log_items`` has ``item_columns_in_log`` per raw ``item_id``."""

    def user_features(self) -> SideTable:
        """User side features per raw ``user_id``."""

    def default_split(self) -> tuple[int, int]:
        """Default (train_end, valid_end) ``yyyymmdd`` boundaries, inclusive."""


@dataclass
class SideTable:
    """Side features of items or users, one row per raw id (first column: ``item_id`` / ``user_id``).

    ``categorical`` maps an output field name to a raw column whose values get a vocabulary (ordered by
    the number of events carrying them; missing -> 0); ``lists`` the same for list columns (e.g. tags);
    ``numeric`` columns are kept as they are (nullable).
    """

    frame: pl.DataFrame
    categorical: dict[str, str] = field(default_factory=dict)
    lists: dict[str, str] = field(default_factory=dict)
    numeric: tuple[str, ...] = ()
