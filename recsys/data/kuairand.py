"""Reader of the KuaiRand releases (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset
with Randomly Exposed Videos", CIKM 2022; CC BY-SA 4.0): Pure, 1K and 27K, which share their schemas.

Point it at the release's ``data/`` folder (or the release root that contains ``data/``). Quirks handled
(see ``DATASETS.md``):

- exact duplicate log rows exist (15,609 in Pure's 4_08-4_21 log): ``prepare`` drops them by default and
  reports how many;
- ``duration_ms == 0`` means missing: it becomes null;
- ``-124`` is a missing-value sentinel in user features (``is_live_streamer``): it becomes null;
- ``tag`` is a quoted, comma-joined list of ints: it becomes a list column;
- the 27K logs (~46 GB, split in part files) are only ever scanned lazily: ``prepare`` streams them through
  user buckets so its memory does not grow with the log size.

Every log row is one impression with its feedback flags; the ``actions`` bitmask holds
:data:`~recsys.data.schemas.KUAIRAND_ACTIONS` in bit order. ``ts`` is ``time_ms``; ``day`` is ``date``;
``hour`` is ``hourmin // 100``. KuaiRand has no times of actions inside one video: only which actions
happened, ``play_time_ms`` and ``duration_ms``.

>>> src = KuaiRandSource(Path("raw/KuaiRand-Pure"), "pure")
>>> [p.name for p in src.log_files()][-1]
'log_random_4_22_to_5_08_pure.csv'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.data import csvfile
from recsys.data.csvfile import Check
from recsys.data.dates import is_valid_yyyymmdd, ms_range
from recsys.data.errors import DataError
from recsys.data.schemas import (
    KUAIRAND_ACTION_COLUMNS,
    KUAIRAND_ACTIONS,
    KUAIRAND_LOG,
    KUAIRAND_RELEASES,
    KUAIRAND_SENTINEL,
    KUAIRAND_SPLIT,
    KUAIRAND_USER_FEATURES,
    KUAIRAND_UTC_OFFSET_HOURS,
    KUAIRAND_VIDEO_BASIC,
    KuaiRandRelease,
)
from recsys.data.source import SideTable

_U32_MAX = (1 << 32) - 1
_FLAGS = (*KUAIRAND_ACTION_COLUMNS.values(), "is_rand")
_AMOUNTS = ("play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time")
_NARROW: dict[str, pl.DataType] = {
    "user_id": pl.UInt32(), "video_id": pl.UInt32(), "date": pl.Int32(), "hourmin": pl.UInt16(),
    "time_ms": pl.Int64(), "tab": pl.UInt8(),
    **{c: pl.UInt8() for c in _FLAGS},
    **{c: pl.UInt32() for c in _AMOUNTS},
}
#: Categorical user features: string columns, and the integer ``onehot_feat*`` codes.
_USER_CATEGORICAL = {
    name: name
    for name, dtype in KUAIRAND_USER_FEATURES.items()
    if name != "user_id" and (dtype == pl.String() or name.startswith("onehot_feat") or name.startswith("is_"))
}
_USER_NUMERIC = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")


def resolve_release(name: str) -> KuaiRandRelease:
    """``"pure"``, ``"1k"``, ``"27k"`` or the dataset names ``"kuairand-pure"``, ... -> the release."""
    key = name.lower().removeprefix("kuairand-").removeprefix("kuairand")
    if key not in KUAIRAND_RELEASES:
        raise ValueError(f"unknown KuaiRand release {name!r}: expected one of pure, 1k, 27k")
    return KUAIRAND_RELEASES[key]


@dataclass
class KuaiRandSource:
    """One KuaiRand release under ``root`` (its ``data/`` folder, or the folder containing ``data/``)."""

    root: Path
    release_name: str = "pure"
    include_random: bool = True

    actions = KUAIRAND_ACTIONS
    utc_offset_hours = KUAIRAND_UTC_OFFSET_HOURS
    order_key = ("day", "user", "ts", "item")
    merge_on = None
    user_column = "user_id"
    item_column = "video_id"
    item_columns_in_log = ()
    bytes_per_row = 72
    rows_per_bucket = 4_000_000  # wide rows (19 columns)
    log_schema = KUAIRAND_LOG
    read_schema = {c: _NARROW[c] for c in KUAIRAND_LOG}
    null_values = ()

    def __post_init__(self) -> None:
        self.release = resolve_release(self.release_name)
        self.dataset = self.release.name
        root = Path(self.root)
        self.root = root / "data" if (root / "data").is_dir() and not (root / self.release.user_features).exists() else root
        lo, hi = ms_range()
        ids = [Check(c, pl.col(c).is_null() | (pl.col(c) < 0) | (pl.col(c) > _U32_MAX), "a non-negative integer id")
               for c in ("user_id", "video_id")]
        flags = [Check(c, ~pl.col(c).is_in([0, 1]).fill_null(False), "0 or 1") for c in _FLAGS]
        amounts = [Check(c, pl.col(c).is_null() | (pl.col(c) < 0), "a non-negative integer") for c in _AMOUNTS]
        self.checks = (
            *ids,
            Check("date", pl.col("date").is_null() | ~is_valid_yyyymmdd(pl.col("date")), "a calendar date yyyymmdd"),
            Check("hourmin", ~pl.col("hourmin").is_in(list(range(0, 2400, 100))).fill_null(False),
                  "a whole hour HH00 in 0..2300"),
            Check("time_ms", ~pl.col("time_ms").is_between(lo, hi - 1).fill_null(False),
                  "epoch milliseconds within 2000..2099"),
            *flags,
            *amounts,
            Check("tab", pl.col("tab").is_null() | ~pl.col("tab").is_between(0, 255), "a tab in 0..255"),
        )

    def log_files(self) -> list[Path]:
        names = self.release.logs if self.include_random else self.release.standard_logs
        return [self.root / n for n in names]

    def input_files(self) -> list[Path]:
        return [*self.log_files(), self.root / self.release.user_features, *(self.root / n for n in self.release.video_basic)]

    def check(self) -> None:
        if not self.root.is_dir():
            raise DataError(self.root, f"folder not found: expected the {self.dataset} data/ folder")
        missing = [p.name for p in self.input_files() if not p.exists()]
        if missing:
            raise DataError(self.root, f"missing file(s) of {self.dataset}: {', '.join(missing)}")
        for path in self.log_files():
            # a log may be empty (a synthetic release with a short window); all of them empty is an error
            csvfile.check_header(path, KUAIRAND_LOG, require_rows=False)
        csvfile.check_header(self.root / self.release.user_features, KUAIRAND_USER_FEATURES)
        for name in self.release.video_basic:
            csvfile.check_header(self.root / name, KUAIRAND_VIDEO_BASIC)

    def scan_logs(self) -> pl.LazyFrame:
        return csvfile.scan(self.log_files(), self.read_schema)

    def normalize(self, raw: pl.DataFrame) -> pl.DataFrame:
        actions = pl.lit(0, pl.UInt16)
        for bit, name in enumerate(KUAIRAND_ACTIONS):
            actions = actions | (pl.col(KUAIRAND_ACTION_COLUMNS[name]).cast(pl.UInt16) * (1 << bit))
        return raw.select(
            "user",
            "item",
            pl.col("time_ms").alias("ts"),
            pl.col("date").alias("day"),
            actions.alias("actions"),
            "play_time_ms",
            pl.when(pl.col("duration_ms") > 0).then(pl.col("duration_ms")).alias("duration_ms"),  # 0 = missing
            "profile_stay_time",
            "comment_stay_time",
            pl.col("is_rand").cast(pl.Boolean),
            "tab",
            (pl.col("hourmin") // 100).cast(pl.UInt8).alias("hour"),
        )

    def finish_events(self, events: pl.DataFrame) -> pl.DataFrame:
        return events

    def item_features(self, log_items: pl.DataFrame | None) -> SideTable:
        """Basic video features: ids and categories get vocabularies, ``tag`` becomes a list of tags."""
        paths = [self.root / n for n in self.release.video_basic]
        frame = csvfile.read_checked(paths, KUAIRAND_VIDEO_BASIC, [
            Check("video_id", pl.col("video_id").is_null() | (pl.col("video_id") < 0), "a non-negative integer id"),
            Check("tag", ~pl.col("tag").str.contains(r"^\d+(,\d+)*$").fill_null(True), "comma-joined integer tags"),
        ])
        frame = frame.unique("video_id", keep="first", maintain_order=True).select(
            pl.col("video_id").alias("item_id"),
            "author_id",
            "video_type",
            "upload_type",
            pl.when(pl.col("music_id") != 0).then(pl.col("music_id")).alias("music_id"),  # 0 = no music
            pl.col("music_type").cast(pl.Int64),
            pl.col("tag").str.split(",").cast(pl.List(pl.Int64)).alias("tag"),
            pl.col("upload_dt").str.to_date("%Y-%m-%d", strict=False).alias("upload_date"),
            pl.col("video_duration").cast(pl.Float32),
            pl.col("visible_status").cast(pl.Float32),
            pl.col("server_width").cast(pl.Float32),
            pl.col("server_height").cast(pl.Float32),
        )
        return SideTable(
            frame,
            categorical={"author": "author_id", "video_type": "video_type", "upload_type": "upload_type",
                         "music": "music_id", "music_type": "music_type"},
            lists={"tags": "tag"},
            numeric=("upload_date", "video_duration", "visible_status", "server_width", "server_height"),
        )

    def user_features(self) -> SideTable:
        """User features: categories and ``onehot_feat*`` codes get vocabularies; -124 becomes missing."""
        path = self.root / self.release.user_features
        frame = csvfile.read_checked([path], KUAIRAND_USER_FEATURES, [
            Check("user_id", pl.col("user_id").is_null() | (pl.col("user_id") < 0), "a non-negative integer id"),
        ])
        frame = frame.unique("user_id", keep="first", maintain_order=True).with_columns(
            pl.when(pl.col(c) != KUAIRAND_SENTINEL).then(pl.col(c)).alias(c)
            for c, dtype in KUAIRAND_USER_FEATURES.items()
            if dtype.is_integer() and c != "user_id"
        )
        return SideTable(frame, categorical=dict(_USER_CATEGORICAL), numeric=_USER_NUMERIC)

    def default_split(self) -> tuple[int, int]:
        """Train <= 2022-04-21, validation 04-22..04-28, test 04-29..05-08 (the usual KuaiRand split)."""
        return KUAIRAND_SPLIT["train_end"], KUAIRAND_SPLIT["valid_end"]
