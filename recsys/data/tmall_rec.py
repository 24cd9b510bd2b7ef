"""Reader of the Tianchi 2014 "Rec Tmall" interaction log (``Tianchi_2014002_Rec_Tmall_Log``).

The release is one or more CSV parts with the header ``item_id,user_id,action,vtime``: ``action`` is one of
``click``, ``collect``, ``cart``, ``alipay`` (the action names of A2Gen's Tmall experiments) and ``vtime``
the local (UTC+8) time of the action. Point the reader at the folder holding the parts: every ``*.csv``
there whose first line is exactly that header is read, in name order (other files are ignored).

What is established and what is not: ``../shared/DATASETS.md`` gives the columns and the action names, not
the bytes. This reader therefore accepts ``vtime`` as ``YYYY-MM-DD HH:MM:SS``, ``YYYY-MM-DD HH:MM`` or
``YYYY-MM-DD`` and ids as non-negative integers up to 2**63, and rejects anything else with the file, line
and column. The synthetic generator (``recsys data synth --dataset tmall-rec``) writes the first form;
test it against the real file's first lines before trusting a run on it.

Prepared dataset (``recsys data prepare --dataset tmall-rec``):

- **Events**: one per log row (exact duplicate rows dropped), ``ts`` the epoch ms of ``vtime`` read as UTC+8,
  ``day`` its local date. Actions become the toolkit's Tmall bits ``click, favourite, cart, purchase``
  (``collect`` is the favourite, ``alipay`` the purchase), so the Tmall chain spec, configs and defaults
  apply unchanged. Unlike IJCAI-15 (day resolution), events are not merged: the log has seconds.
- **Items and users**: ids only (the log has no side features).
- **Default split**: by the log's last day ``D``: validation ``D-13..D-7``, test ``D-6..D`` (the last two weeks,
  as for IJCAI-15), read from the ``vtime`` column before anything else.

>>> src = TmallRecSource(Path("raw/tmall-rec"))
>>> src.actions
('click', 'favourite', 'cart', 'purchase')
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.data import csvfile
from recsys.data.csvfile import Check
from recsys.data.dates import MS_PER_HOUR, epoch_ms_to_yyyymmdd
from recsys.data.errors import DataError
from recsys.data.schemas import TMALL_ACTIONS, TMALL_REC_ACTIONS, TMALL_REC_LOG
from recsys.data.source import SideTable

#: ``vtime`` formats accepted, tried in order.
VTIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_HEADER = ",".join(TMALL_REC_LOG)


def parse_vtime(column: str = "vtime") -> pl.Expr:
    """Local naive datetime (ms) of a ``vtime`` string in one of :data:`VTIME_FORMATS` (null if none fits)."""
    text = pl.col(column).str.strip_chars()
    return pl.coalesce([text.str.strptime(pl.Datetime("ms"), fmt, strict=False, exact=True) for fmt in VTIME_FORMATS])


@dataclass
class TmallRecSource:
    """The Rec Tmall log parts under ``root``."""

    root: Path

    dataset = "tmall-rec"
    actions = TMALL_ACTIONS
    utc_offset_hours = 8
    order_key = ("day", "user", "ts", "item", "actions")
    merge_on = None
    user_column = "user_id"
    item_column = "item_id"
    item_columns_in_log = ()
    bytes_per_row = 40  # "12345678,1234567,click,2014-11-11 10:00:00"
    rows_per_bucket = 16_000_000
    log_schema = TMALL_REC_LOG
    read_schema = TMALL_REC_LOG
    null_values = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        ids = [Check(c, pl.col(c).is_null() | (pl.col(c) < 0), "a non-negative integer id")
               for c in ("item_id", "user_id")]
        self.checks = (
            *ids,
            Check("action", ~pl.col("action").is_in(list(TMALL_REC_ACTIONS)).fill_null(False),
                  f"an action in {', '.join(TMALL_REC_ACTIONS)}"),
            Check("vtime", parse_vtime().is_null(), "a time YYYY-MM-DD HH:MM:SS (or YYYY-MM-DD HH:MM, YYYY-MM-DD)"),
        )

    def log_files(self) -> list[Path]:
        files = []
        for path in sorted(self.root.glob("*.csv")):
            with path.open("rb") as f:
                first = f.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
            if first == _HEADER:
                files.append(path)
        return files

    def input_files(self) -> list[Path]:
        return self.log_files()

    def check(self) -> None:
        if not self.root.is_dir():
            raise DataError(self.root, "folder not found: expected the folder of the Rec Tmall log parts")
        if not self.log_files():
            raise DataError(self.root, f"no CSV file here starts with the header {_HEADER!r} (the Rec Tmall log)")

    def scan_logs(self) -> pl.LazyFrame:
        return csvfile.scan(self.log_files(), self.read_schema)

    def _ts(self) -> pl.Expr:
        return parse_vtime().dt.epoch("ms") - self.utc_offset_hours * MS_PER_HOUR

    def normalize(self, raw: pl.DataFrame) -> pl.DataFrame:
        code = {name: 1 << TMALL_ACTIONS.index(canonical) for name, canonical in TMALL_REC_ACTIONS.items()}
        events = raw.select(
            "user",
            "item",
            self._ts().alias("ts"),
            pl.col("action").replace_strict(code, return_dtype=pl.UInt16).alias("actions"),
        )
        day = epoch_ms_to_yyyymmdd(pl.col("ts"), utc_offset_hours=self.utc_offset_hours)
        return events.select("user", "item", "ts", day.alias("day"), "actions")

    def finish_events(self, events: pl.DataFrame) -> pl.DataFrame:
        return events

    def item_features(self, log_items: pl.DataFrame | None) -> SideTable:
        return SideTable(pl.DataFrame({"item_id": pl.Series([], dtype=TMALL_REC_LOG["item_id"])}))

    def user_features(self) -> SideTable:
        return SideTable(pl.DataFrame({"user_id": pl.Series([], dtype=TMALL_REC_LOG["user_id"])}))

    def default_split(self) -> tuple[int, int]:
        """Validation the second-to-last week, test the last week of the log (by its last local day)."""
        self.check()
        last = self.scan_logs().select(parse_vtime().max()).collect(engine="streaming").item()
        if last is None:
            raise DataError(self.log_files()[0], "no parseable vtime in the log")
        end = last.date()

        def ymd(d: dt.date) -> int:
            return d.year * 10_000 + d.month * 100 + d.day

        return ymd(end - dt.timedelta(days=14)), ymd(end - dt.timedelta(days=7))
