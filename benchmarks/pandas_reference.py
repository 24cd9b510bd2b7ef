"""A plain pandas implementation of ``recsys data prepare`` for Tmall IJCAI-15: the benchmark's reference.

It produces the same prepared dataset as :func:`recsys.data.prepare.prepare` on ``tmall`` (default
options) with the ordinary pandas tools (``read_csv``, ``value_counts``, ``groupby``, ``merge``, ``map``,
``drop_duplicates``) and writes Parquet through pyarrow. It is written the way one would write it in
pandas without knowing the toolkit's kernels: not deliberately slow, and not a port of the numpy tricks.
Validation is left out (the input is trusted).

The rules it reproduces (see ``recsys/data/prepare.py``, ``tmall.py``, ``events.py``, ``vocab.py``):

- vocabularies: index 1.. by descending count, ties by ascending raw value, 0 = padding / unknown;
  user and item counts are **log rows** (before duplicates are dropped and actions merged);
- item side features: per item the minimum of its rows' ``cat_id``, ``seller_id``, ``brand_id`` (nulls
  ignored); the category / seller / brand vocabularies count, per value, the item counts of the items
  carrying it;
- events: ``day = year * 10000 + mmdd``; ``action_type`` 0 click, 1 cart, 2 purchase, 3 favourite become
  the bits ``click=1, favourite=2, cart=4, purchase=8``; exact duplicate (user, item, day, action) rows
  are dropped, then all actions of one (user, item, day) merge into one event (bits OR-ed); events are
  ordered by day, user, item; ``ts`` is local (UTC+8) midnight of the day in epoch ms; ``split`` is 0
  train (day <= train_end), 1 valid (<= valid_end), 2 test; one boolean column per action; the item's
  category, seller and brand indices;
- sequences: one row per user (ascending index), lists of item, ts, actions, split in event order;
- users: ``age_range`` (0 = unknown) and ``gender`` (2 = unknown) of the first ``user_info`` row of a
  user, as categorical features: vocabularies weighted by the users' counts, unknown and missing -> 0.

:func:`compare_prepared` compares two prepared folders (used by the benchmark and its test).

>>> summary = prepare_tmall(Path("raw/tmall"), Path("out/tmall-pandas"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

YEAR = 2014
UTC_OFFSET_HOURS = 8
LOG_FILE = "user_log_format1.csv"
INFO_FILE = "user_info_format1.csv"
#: Raw ``action_type`` -> bit of the prepared ``actions`` mask; action names in bit order.
ACTION_BITS = {0: 1, 3: 2, 1: 4, 2: 8}
ACTIONS = ("click", "favourite", "cart", "purchase")
SIDE = {"category": "cat_id", "seller": "seller_id", "brand": "brand_id"}
USER_SIDE = ("age_range", "gender")
SPLIT_NAMES = ("train", "valid", "test")


def prepare_tmall(
    raw: Path,
    out: Path,
    *,
    year: int = YEAR,
    train_end: int | None = None,
    valid_end: int | None = None,
    sequences: str = "groupby",
) -> dict[str, Any]:
    """Prepare the Tmall files under ``raw`` into ``out`` (replaced); returns the summary it writes to
    ``out/manifest.json`` (row counts, vocabulary sizes, split counts, events per day).

    ``sequences="groupby"`` builds the per-user lists the idiomatic pandas way,
    ``groupby("user").agg(list)`` (the straightforward reference); ``"offsets"`` builds them from
    offsets with pyarrow's ``ListArray.from_arrays`` (a tuned variant, reported alongside).
    """
    raw, out = Path(raw), Path(out)
    started = time.perf_counter()
    train_end = train_end or year * 10_000 + 1028
    valid_end = valid_end or year * 10_000 + 1104
    if out.exists():
        shutil.rmtree(out)
    (out / "events").mkdir(parents=True)
    (out / "sequences").mkdir()
    (out / "vocab").mkdir()

    log = pd.read_csv(
        raw / LOG_FILE,
        dtype={"user_id": "uint32", "item_id": "uint32", "cat_id": "uint32", "seller_id": "uint32",
               "brand_id": "UInt32", "time_stamp": "uint16", "action_type": "uint8"},
        na_values=["", "NULL"],
        keep_default_na=False,
    )
    rows_read = len(log)

    # Vocabularies of users and items (counts are log rows), item side features (min over the rows).
    users = _vocab(log["user_id"].value_counts())
    per_item = log.groupby("item_id", sort=False).agg(
        count=("user_id", "size"), cat_id=("cat_id", "min"), seller_id=("seller_id", "min"), brand_id=("brand_id", "min")
    )
    items = _vocab(per_item["count"])
    vocabs = {"user": users, "item": items}

    item_table = pd.DataFrame({"item_id": items["raw"], "_w": items["count"]}).merge(
        per_item[list(SIDE.values())], left_on="item_id", right_index=True, how="left"
    )
    for name, col in SIDE.items():
        vocab = _vocab(item_table.groupby(col)["_w"].sum())
        vocabs[name] = vocab
        item_table[name] = _lookup(vocab, item_table[col])
    item_table = _with_padding(item_table, "item", list(SIDE), ["item_id"])

    # Events: remap, normalise, drop exact duplicates, merge the actions of (user, item, day), order.
    events = pd.DataFrame({
        "user": _lookup(users, log["user_id"]),
        "item": _lookup(items, log["item_id"]),
        "day": (year * 10_000 + log["time_stamp"].astype("int32")).astype("int32"),
        "actions": log["action_type"].map(ACTION_BITS).astype("uint16"),
    })
    del log
    events = events.drop_duplicates()
    dropped = rows_read - len(events)
    for bit, name in enumerate(ACTIONS):
        events[name] = (events["actions"] & (1 << bit)) > 0
    before_merge = len(events)
    events = events.groupby(["day", "user", "item"], sort=True)[list(ACTIONS)].max().reset_index()
    events["actions"] = sum(events[name] * (1 << bit) for bit, name in enumerate(ACTIONS)).astype("uint16")
    days = events["day"].unique()
    midnight = pd.to_datetime(pd.Series(days).astype(str), format="%Y%m%d") - pd.Timedelta(hours=UTC_OFFSET_HOURS)
    epoch_ms = (midnight - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
    events["ts"] = events["day"].map(pd.Series(epoch_ms.to_numpy(), index=days)).astype("int64")
    events["split"] = np.select(
        [events["day"] <= train_end, events["day"] <= valid_end], [0, 1], 2
    ).astype("uint8")
    for name in SIDE:
        events[name] = item_table[name].to_numpy()[events["item"].to_numpy()]
    events = events[["user", "item", "ts", "day", "split", "actions", *ACTIONS, *SIDE]]
    events.to_parquet(out / "events" / "part-00000.parquet", index=False)

    # Sequences: a stable reordering by user keeps each user's events in event order.
    by_user = events[["user", "item", "ts", "actions", "split"]].sort_values("user", kind="stable")
    columns = ("item", "ts", "actions", "split")
    if sequences == "groupby":
        lists = by_user.groupby("user", sort=True)[list(columns)].agg(list)
        table = pa.table({
            "user": pa.array(lists.index.to_numpy()),
            **{c: pa.array(lists[c], type=pa.list_(pa.from_numpy_dtype(by_user[c].dtype))) for c in columns},
        })
    else:
        lengths = by_user.groupby("user", sort=True).size()
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths.to_numpy())]).astype("int32"))
        table = pa.table({
            "user": pa.array(lengths.index.to_numpy()),
            **{c: pa.ListArray.from_arrays(offsets, pa.array(by_user[c].to_numpy())) for c in columns},
        })
    pq.write_table(table, out / "sequences" / "part-00000.parquet")

    # Users: the first user_info row of each user; categorical age_range and gender (unknown -> 0).
    info = pd.read_csv(
        raw / INFO_FILE, dtype={"user_id": "uint32", "age_range": "Int64", "gender": "Int64"},
        na_values=["", "NULL"], keep_default_na=False,
    ).drop_duplicates("user_id", keep="first")
    info["age_range"] = info["age_range"].where(info["age_range"] > 0).astype("UInt8")
    info["gender"] = info["gender"].where(info["gender"] < 2).astype("UInt8")
    user_table = pd.DataFrame({"user_id": users["raw"], "_w": users["count"]}).merge(info, on="user_id", how="left")
    for name in USER_SIDE:
        vocab = _vocab(user_table.groupby(name)["_w"].sum())
        vocabs[name] = vocab
        user_table[name] = _lookup(vocab, user_table[name])
    user_table = _with_padding(user_table, "user", list(USER_SIDE), ["user_id"])

    item_table[["item", "item_id", *SIDE]].to_parquet(out / "items.parquet", index=False)
    user_table[["user", "user_id", "age_range", "gender"]].to_parquet(out / "users.parquet", index=False)
    for name, vocab in vocabs.items():
        vocab.to_parquet(out / "vocab" / f"{name}.parquet", index=False)

    split_counts = events["split"].value_counts()
    per_day = events["day"].value_counts().sort_index()
    summary = {
        "dataset": "tmall",
        "rows": {"read": rows_read, "duplicates_dropped": dropped, "merged": before_merge - len(events),
                 "kcore_removed": 0, "events": len(events)},
        "vocab_sizes": {name: len(v) + 1 for name, v in vocabs.items()},
        "split": {"train_end": train_end, "valid_end": valid_end,
                  "counts": {n: int(split_counts.get(i, 0)) for i, n in enumerate(SPLIT_NAMES)}},
        "days": {str(d): int(n) for d, n in per_day.items()},
        "extra": {"seconds": round(time.perf_counter() - started, 3), "buckets": 1},
    }
    (out / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _vocab(counts: pd.Series) -> pd.DataFrame:
    """``idx, raw, count`` from counts indexed by raw value: descending count, ties by raw value."""
    frame = pd.DataFrame({"raw": counts.index.to_numpy(), "count": counts.to_numpy().astype("uint64")})
    frame = frame[frame["raw"].notna()].sort_values(["count", "raw"], ascending=[False, True])
    frame.insert(0, "idx", np.arange(1, len(frame) + 1, dtype="uint32"))
    if isinstance(frame["raw"].dtype, pd.api.extensions.ExtensionDtype):  # no nulls left
        frame["raw"] = frame["raw"].to_numpy(frame["raw"].dtype.numpy_dtype)
    return frame.reset_index(drop=True)


def _lookup(vocab: pd.DataFrame, values: pd.Series) -> pd.Series:
    """Vocabulary indices of ``values``; unknown and missing values -> 0."""
    index = pd.Series(vocab["idx"].to_numpy(), index=vocab["raw"].to_numpy())
    return values.map(index).fillna(0).astype("uint32")


def _with_padding(table: pd.DataFrame, entity: str, categorical: list[str], nullable: list[str]) -> pd.DataFrame:
    """Row i = index i: the ``entity`` index column first, then a padding row 0 with index 0 in the
    ``categorical`` columns and null in the ``nullable`` ones (raw ids and features)."""
    body = pd.DataFrame({entity: np.arange(1, len(table) + 1, dtype="uint32")})
    for c in nullable:
        body[c] = table[c].astype(_NULLABLE.get(str(table[c].dtype), table[c].dtype)).array
    for c in categorical:
        body[c] = table[c].to_numpy()
    padding = pd.DataFrame({c: pd.array([0 if c == entity or c in categorical else None], dtype=body[c].dtype)
                            for c in body.columns})
    return pd.concat([padding, body], ignore_index=True)


_NULLABLE = {"uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "int32": "Int32", "int64": "Int64"}


# ---------------------------------------------------------------------------------------------------------
# Comparing two prepared folders
# ---------------------------------------------------------------------------------------------------------


def compare_prepared(got: Path, expected: Path) -> list[str]:
    """Differences between two prepared Tmall folders (empty: equal). Compared with polars ``equals`` plus
    equal schemas: events (all columns, row order), sequences, items, users, every vocabulary, and the
    manifest's row counts, vocabulary sizes, split counts and events per day.

    ``expected`` (the reference) has one part per table; ``got`` may have several (one per user bucket):
    each part must equal the expected rows of its users, in the same order, and the parts together must
    hold every expected row.
    """
    import polars as pl

    got, expected = Path(got), Path(expected)
    problems: list[str] = []
    for table in ("events", "sequences"):
        parts = sorted((got / table).glob("part-*.parquet"))
        ref = pl.read_parquet(sorted((expected / table).glob("part-*.parquet")))
        if not parts:
            problems.append(f"{table}: no parts in {got / table}")
            continue
        total = 0
        for part in parts:
            frame = pl.read_parquet(part)
            total += frame.height
            want = ref if len(parts) == 1 else ref.filter(pl.col("user").is_in(frame["user"].unique().implode()))
            problems += _frame_diff(f"{table}/{part.name}", frame, want)
        if total != ref.height:
            problems.append(f"{table}: {total:,} rows in {len(parts)} part(s), expected {ref.height:,}")
    for name in ("items.parquet", "users.parquet"):
        problems += _frame_diff(name, pl.read_parquet(got / name), pl.read_parquet(expected / name))
    names = sorted(p.name for p in (got / "vocab").glob("*.parquet"))
    want_names = sorted(p.name for p in (expected / "vocab").glob("*.parquet"))
    if names != want_names:
        problems.append(f"vocab: files {names}, expected {want_names}")
    for name in sorted(set(names) & set(want_names)):
        problems += _frame_diff(f"vocab/{name}", pl.read_parquet(got / "vocab" / name),
                                pl.read_parquet(expected / "vocab" / name))
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (got, expected))
    for key in ("rows", "vocab_sizes", "split", "days"):
        if a.get(key) != b.get(key):
            problems.append(f"manifest {key}: {a.get(key)} != expected {b.get(key)}")
    return problems


def _frame_diff(name: str, got: Any, want: Any) -> list[str]:
    """A one-line description of how two polars frames differ: empty when their schemas (names, order,
    dtypes) are equal and ``got.equals(want)`` (which alone ignores dtypes: u8 [1] equals i64 [1])."""
    if got.schema != want.schema:
        return [f"{name}: schema {dict(got.schema)} != expected {dict(want.schema)}"]
    if got.equals(want):
        return []
    if got.height != want.height:
        return [f"{name}: {got.height:,} rows, expected {want.height:,}"]
    for col in got.columns:
        if not got[col].equals(want[col]):
            import polars as pl

            same = got[col].eq_missing(want[col])
            row = int(same.arg_min()) if isinstance(same.dtype, pl.Boolean) and not same.all() else -1
            if row < 0:
                return [f"{name}: column {col!r} differs"]
            return [f"{name}: column {col!r} differs first at row {row:,}: {got[col][row]!r} != expected "
                    f"{want[col][row]!r} (row {got.row(row)} vs {want.row(row)})"]
    return [f"{name}: frames differ"]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="folder with user_log_format1.csv and user_info_format1.csv")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(json.dumps(prepare_tmall(args.raw, args.out)["rows"]))
