"""Reader of the Tmall IJCAI-15 "Repeat Buyers Prediction" release (Tianchi, ``data_format1``).

Files: ``user_log_format1.csv`` (the interaction log, ~55M rows) and ``user_info_format1.csv`` (user
features). Quirks handled (see ``DATASETS.md``):

- ``time_stamp`` is a month-day ``mmdd`` integer without a year, written ``829`` or ``0829``: both parse; the
  year is a parameter (default 2014, the Double 11 the log ends on). Timestamps have **day resolution**:
  ``ts`` is local (UTC+8) midnight of that day.
- ``brand_id`` is missing as an empty field or ``NULL``: both read as missing (vocabulary index 0).
- The log is not time-ordered and has no order within a day: prepared sequences use the tie rule of
  :mod:`recsys.data.events`, and all actions of a user on an item in one day merge into one event.
- ``action_type`` 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite become action bits in funnel
  order ``click, favourite, cart, purchase``.

>>> src = TmallSource(Path("raw/tmall"))
>>> src.actions, src.log_files()[0].name
(('click', 'favourite', 'cart', 'purchase'), 'user_log_format1.csv')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data import csvfile
from recsys.data.csvfile import Check
from recsys.data.dates import day_to_ts, is_valid_ymd
from recsys.data.errors import DataError
from recsys.data.source import SideTable
from recsys.data.schemas import (
    TMALL_ACTION_TYPES,
    TMALL_ACTIONS,
    TMALL_DEFAULT_YEAR,
    TMALL_USER_INFO,
    TMALL_USER_INFO_FILE,
    TMALL_USER_LOG,
    TMALL_USER_LOG_FILE,
)

_U32_MAX = (1 << 32) - 1
#: Bit of each raw ``action_type`` code in the prepared ``actions`` bitmask.
ACTION_BIT = {code: TMALL_ACTIONS.index(name) for code, name in TMALL_ACTION_TYPES.items()}


def _id_check(column: str, *, nullable: bool = False) -> Check:
    c = pl.col(column)
    bad = (c < 0) | (c > _U32_MAX)
    return Check(column, bad if nullable else c.is_null() | bad, "a non-negative integer id")


@dataclass
class TmallSource:
    """The IJCAI-15 Tmall files under ``root`` (the folder holding ``user_log_format1.csv``)."""

    root: Path
    year: int = TMALL_DEFAULT_YEAR

    dataset = "tmall"
    actions = TMALL_ACTIONS
    utc_offset_hours = 8
    order_key = ("day", "user", "item", "actions")  # day resolution: within a day, by item
    merge_on = ("day", "user", "item")
    user_column = "user_id"
    item_column = "item_id"
    item_columns_in_log = ("cat_id", "seller_id", "brand_id")
    bytes_per_row = 32  # the real log: 1.8 GB / 54.9M rows
    rows_per_bucket = 16_000_000  # narrow rows: 16M fit in ~1 GB
    log_schema = TMALL_USER_LOG
    read_schema = {c: {"time_stamp": pl.UInt16(), "action_type": pl.UInt8()}.get(c, pl.UInt32()) for c in TMALL_USER_LOG}
    null_values = ("NULL",)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        mmdd = pl.col("time_stamp")
        self.checks = (
            _id_check("user_id"),
            _id_check("item_id"),
            _id_check("cat_id"),
            _id_check("seller_id"),
            _id_check("brand_id", nullable=True),
            Check(
                "time_stamp",
                mmdd.is_null() | ~is_valid_ymd(pl.lit(self.year), mmdd // 100, mmdd % 100),
                f"a month-day mmdd of {self.year} (e.g. 829, 0829 or 1111)",
            ),
            Check("action_type", ~pl.col("action_type").is_in(list(TMALL_ACTION_TYPES)).fill_null(False)
                  | pl.col("action_type").is_null(), "an action_type in 0..3"),
        )

    def log_files(self) -> list[Path]:
        return [self.root / TMALL_USER_LOG_FILE]

    def input_files(self) -> list[Path]:
        return [self.root / TMALL_USER_LOG_FILE, self.root / TMALL_USER_INFO_FILE]

    def check(self) -> None:
        if not self.root.is_dir():
            raise DataError(self.root, "folder not found: expected the Tmall IJCAI-15 data_format1 folder")
        for path in self.input_files():
            if not path.exists():
                raise DataError(path, "file not found (expected in the Tmall IJCAI-15 data_format1 folder)")
        csvfile.check_header(self.root / TMALL_USER_LOG_FILE, TMALL_USER_LOG)
        csvfile.check_header(self.root / TMALL_USER_INFO_FILE, TMALL_USER_INFO)

    def scan_logs(self) -> pl.LazyFrame:
        return csvfile.scan(self.log_files(), self.read_schema, null_values=self.null_values)

    def normalize(self, raw: pl.DataFrame) -> pl.DataFrame:
        mmdd = pl.col("time_stamp").cast(pl.Int32)
        bit_of_code = np.zeros(256, dtype=np.uint16)  # codes are validated to be 0..3
        for code, bit in ACTION_BIT.items():
            bit_of_code[code] = 1 << bit
        return raw.select(
            "user",
            "item",
            (self.year * 10_000 + mmdd).alias("day"),
        ).with_columns(pl.Series("actions", bit_of_code[raw["action_type"].to_numpy()]))

    def finish_events(self, events: pl.DataFrame) -> pl.DataFrame:
        """Add ``ts``, the epoch ms of local midnight of ``day`` (the log has day resolution)."""
        return events.with_columns(day_to_ts(events["day"], self.utc_offset_hours).alias("ts"))

    def item_features(self, log_items: pl.DataFrame | None) -> SideTable:
        """Category, seller and brand per item, from the log (``log_items``: one row per ``item_id``)."""
        assert log_items is not None
        return SideTable(log_items, categorical={"category": "cat_id", "seller": "seller_id", "brand": "brand_id"})

    def user_features(self) -> SideTable:
        """``age_range`` 1..8 and ``gender`` 0 female / 1 male; 0 or missing age and 2 or missing gender
        become null (unknown)."""
        path = self.root / TMALL_USER_INFO_FILE
        frame = csvfile.read_checked(
            [path],
            TMALL_USER_INFO,
            [_id_check("user_id"),
             Check("age_range", ~pl.col("age_range").is_between(0, 8).fill_null(True), "an age_range in 0..8"),
             Check("gender", ~pl.col("gender").is_between(0, 2).fill_null(True), "a gender in 0, 1, 2")],
            null_values=self.null_values,
        )
        frame = frame.unique("user_id", keep="first", maintain_order=True).select(
            "user_id",
            pl.when(pl.col("age_range") > 0).then(pl.col("age_range")).cast(pl.UInt8).alias("age_range"),
            pl.when(pl.col("gender") < 2).then(pl.col("gender")).cast(pl.UInt8).alias("gender"),
        )
        return SideTable(frame, categorical={"age_range": "age_range", "gender": "gender"})

    def default_split(self) -> tuple[int, int]:
        """Train up to 10-28, validation 10-29..11-04, test 11-05..11-11 (the last two weeks)."""
        return self.year * 10_000 + 1028, self.year * 10_000 + 1104
