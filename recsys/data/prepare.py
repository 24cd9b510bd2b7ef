"""``recsys data prepare``: raw public files -> a prepared dataset (Parquet + manifest).

Output layout (all ids are vocabulary indices, 0 = padding / unknown)::

    OUT/manifest.json                      what went in (files, sizes, sha256) and what came out
    OUT/events/part-*.parquet              the event table (one file per user bucket), ordered by day,
                                           then user, then the tie rule: the day-by-day stream reads it
    OUT/sequences/part-*.parquet           one row per user: chronological lists item, ts, actions, split
    OUT/items.parquet, OUT/users.parquet   side features by index
    OUT/vocab/<field>.parquet              idx, raw value, count for every remapped field

Events carry ``user, item, ts, split, actions`` (a bitmask over the manifest's ``actions``), one boolean
column per action, the dataset's context columns, and the item's categorical side features.

How it scales: a log small enough for memory (``rows_per_bucket``) is read once into narrow columns and
processed with numpy/polars kernels (no Python loop over rows); stages that do not depend on each other
(checks and id counts, the two remappings, ranges of days being ordered, the event and sequence tables)
run on a small thread pool, since polars and numpy release the GIL. A larger log (KuaiRand-27K is ~46 GB) is
streamed once into user buckets on disk, batch by batch, then each bucket is processed alone: peak memory
depends on the bucket size and the vocabularies, not on the size of the log.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.data import csvfile
from recsys.data.events import order_events, value_ranges
from recsys.data.kuairand import KuaiRandSource
from recsys.data.manifest import BackgroundHashes, Manifest, SourceFile, stat_files, staged_folder
from recsys.data.movielens import MovieLensSource
from recsys.data.source import RawSource, SideTable
from recsys.data.splits import SPLIT_NAMES, assign_date_split
from recsys.data.tmall import TmallSource
from recsys.data.tmall_rec import TmallRecSource
from recsys.data.vocab import INDEX_DTYPE, Vocab, count_values

DATASETS = ("tmall", "tmall-rec", "kuairand-pure", "kuairand-1k", "kuairand-27k", "movielens-100k", "movielens-1m")
#: Buckets with fewer events are ordered on one thread: below it, cutting them costs more than it saves.
PARALLEL_MIN_ROWS = 1 << 20
TIE_RULE = (
    "events of a user are ordered by ts, then item index, then (Tmall) the action bits, then the remaining "
    "columns; Tmall has day resolution, and all actions of a user on an item in one day are one event"
)


@dataclass
class PrepareOptions:
    """Options of ``prepare`` (also recorded in the manifest)."""

    drop_duplicates: bool = True  # drop exact duplicate log rows (their count is reported)
    kcore: int = 0  # iterative k-core filter on users and items (0 = off)
    train_end: int | None = None  # last training day, yyyymmdd (None: the dataset's default)
    valid_end: int | None = None  # last validation day, yyyymmdd (None: the dataset's default)
    rows_per_bucket: int | None = None  # rows processed in memory at once (None: the source's default)


def make_source(dataset: str, raw: Path, *, year: int | None = None, include_random: bool = True) -> RawSource:
    """The reader of ``dataset`` (one of :data:`DATASETS`) over the folder ``raw`` (``year``: Tmall only,
    ``include_random``: KuaiRand only)."""
    if dataset == "tmall":
        return TmallSource(raw) if year is None else TmallSource(raw, year=year)
    if dataset == "tmall-rec":
        return TmallRecSource(raw)
    if dataset.startswith("movielens-") and dataset in DATASETS:
        return MovieLensSource(raw, dataset.removeprefix("movielens-"))
    if dataset in DATASETS:
        return KuaiRandSource(raw, dataset.removeprefix("kuairand-"), include_random=include_random)
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


def source_params(source: RawSource) -> dict[str, Any]:
    if isinstance(source, TmallSource):
        return {"year": source.year}
    if isinstance(source, KuaiRandSource):
        return {"include_random": source.include_random}
    if isinstance(source, MovieLensSource):
        return {}  # the release is the dataset name; nothing else is configurable
    return {}


def prepare(
    source: RawSource,
    out: Path,
    options: PrepareOptions | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Manifest:
    """Prepare ``source`` into ``out`` (see the module docstring); skip if ``out`` is up to date."""
    options = options or PrepareOptions()
    out = Path(out)
    source.check()
    train_end, valid_end = source.default_split()
    split = {
        "train_end": options.train_end or train_end,
        "valid_end": options.valid_end or valid_end,
    }
    if split["train_end"] >= split["valid_end"]:
        raise ValueError(f"train_end {split['train_end']} must be before valid_end {split['valid_end']}")
    config = {"dataset": source.dataset, **source_params(source), **asdict(options), **split}
    raw_root = Path(source.root).resolve()
    files = [p.resolve() for p in source.input_files()]
    inputs = stat_files(files, raw_root)
    if not force and (out / "manifest.json").exists():
        try:
            old = Manifest.read(out)
        except (ValueError, TypeError, KeyError):
            old = None
        if old is not None and old.matches(config, inputs, raw_root):
            log(f"{out} is up to date (same inputs and options): nothing to do")
            return old

    started = time.perf_counter()
    # Hashing starts once the logs are read: it then overlaps the numpy stages instead of competing with
    # the multi-threaded CSV parser.
    hashes = BackgroundHashes(files, start=False)
    try:
        with staged_folder(out) as tmp:
            # Threads for independent stages that each leave a core idle (polars and numpy release the GIL).
            with ThreadPoolExecutor(_threads(), thread_name_prefix="prepare") as pool:
                manifest = _run(source, tmp, options, split, config, inputs, raw_root, log, hashes.start, pool)
            for f, digest in zip(manifest.inputs, hashes.result(), strict=True):
                f.sha256 = digest
            manifest.extra["seconds"] = round(time.perf_counter() - started, 3)
            manifest.write(tmp)
    except BaseException:
        hashes.cancel()
        raise
    log(f"prepared {source.dataset}: {manifest.rows['events']:,} events, {manifest.vocab_sizes['user'] - 1:,} users, "
        f"{manifest.vocab_sizes['item'] - 1:,} items -> {out} ({manifest.extra['seconds']:.1f} s)")
    return manifest


# ---------------------------------------------------------------------------------------------------------


def _run(
    source: RawSource,
    tmp: Path,
    options: PrepareOptions,
    split: dict[str, int],
    config: dict[str, Any],
    inputs: list[SourceFile],
    raw_root: Path,
    log: Callable[[str], None],
    logs_read: Callable[[], None],
    pool: ThreadPoolExecutor,
) -> Manifest:
    log_files = source.log_files()
    log_bytes = sum(p.stat().st_size for p in log_files)
    n_buckets = max(1, math.ceil(log_bytes / source.bytes_per_row / (options.rows_per_bucket or source.rows_per_bucket)))
    side_cols = list(source.item_columns_in_log)
    uid, iid = source.user_column, source.item_column

    # 1. Read the logs once: into memory, or streamed into user buckets on disk.
    checked = None
    if n_buckets == 1:
        raw = _collect(source.scan_logs(), source)
        # Checked while the ids are counted below; the check's error, if any, is raised before counts are used.
        checked = pool.submit(csvfile.validate, raw, source.checks, log_files, source.log_schema,
                              null_values=source.null_values)
        rows_read = raw.height
        buckets: list[Callable[[], pl.DataFrame]] = [lambda r=raw: r]
        ids = raw.lazy()
    else:
        stage = tmp / "_stage"
        rows_read = _stage_buckets(source, stage, n_buckets, log)
        buckets = [lambda b=b: pl.read_parquet(stage / f"b{b:05d}") for b in range(n_buckets)
                   if (stage / f"b{b:05d}").exists()]
        ids = pl.scan_parquet(stage / "**" / "*.parquet")
    logs_read()
    if rows_read == 0:
        raise csvfile.DataError(log_files[0], "no data rows in the logs")
    log(f"read {rows_read:,} log rows from {len(log_files)} file(s) in {n_buckets} bucket(s)")

    # 2. Vocabularies of users and items (k-core filtered if asked), and the side tables.
    try:
        user_counts, item_counts, log_items = _count_ids(ids, raw if n_buckets == 1 else None, uid, iid, side_cols)
    finally:
        if checked is not None:
            checked.result()  # a broken check is the error to report, whatever counting made of the rows
    if options.kcore:
        user_counts, item_counts = _kcore(ids.select(pl.col(uid).alias("user_id"), pl.col(iid).alias("item_id")),
                                          user_counts, item_counts, options.kcore)
    if n_buckets == 1:
        del raw, ids  # the bucket loader holds the only reference now
    users = Vocab.from_counts("user", user_counts)
    items = Vocab.from_counts("item", item_counts)
    vocabs: dict[str, Vocab] = {"user": users, "item": items}
    item_side = source.item_features(log_items)
    item_table = _side_table(item_side, "item", items, vocabs)
    user_table = _side_table(source.user_features(), "user", users, vocabs)
    event_item_fields = [*item_side.categorical, *item_side.lists]

    # 3. Events, bucket by bucket: remap, normalise, order, dedup/merge, split, write.
    rows = {"read": rows_read, "duplicates_dropped": 0, "merged": 0, "kcore_removed": 0, "events": 0}
    split_counts = dict.fromkeys(SPLIT_NAMES, 0)
    days: dict[int, int] = {}
    columns: dict[str, dict[str, str]] = {}
    first_key = source.order_key[0]  # "day" for every source

    def order_range(events: pl.DataFrame, bounds: tuple[int, int] | None) -> tuple[pl.DataFrame, int]:
        """Order, dedup and merge the events whose first key is in ``[a, b)`` (all if ``None``); add ``ts``
        and ``split``."""
        if bounds is not None:
            events = events.filter(pl.col(first_key).is_between(*bounds, closed="left"))
        events, dropped = order_events(
            events, key=source.order_key, drop_duplicates=options.drop_duplicates, merge_on=source.merge_on
        )
        events = source.finish_events(events)
        return events.with_columns(assign_date_split(pl.col("day"), split["train_end"], split["valid_end"])), dropped

    for b in range(len(buckets)):
        frame = buckets[b]()
        buckets[b] = _spent  # release the in-memory log as soon as it is loaded
        user, item = pool.map(lambda vocab, col: vocab.lookup(frame[col]), (users, items), (uid, iid))
        frame = frame.with_columns(user.alias("user"), item.alias("item"))
        frame = frame.drop(uid, iid, *side_cols)
        if options.kcore:
            before = frame.height
            frame = frame.filter((pl.col("user") > 0) & (pl.col("item") > 0))
            rows["kcore_removed"] += before - frame.height
        events = source.normalize(frame)
        del frame
        if events.height == 0:  # every row of this bucket fell out of the k-core
            continue
        n_before = events.height
        # Rows with different first keys (days) never tie, duplicate or merge: large buckets are ordered as
        # ranges of days on the pool's threads, each cutting out its own range, concatenated in day order.
        ranges = value_ranges(events[first_key], _threads()) if events.height >= PARALLEL_MIN_ROWS else []
        done = list(pool.map(partial(order_range, events), ranges or [None]))
        events = pl.concat([part for part, _ in done], rechunk=False)
        dropped = sum(n for _, n in done)
        rows["duplicates_dropped"] += dropped
        rows["merged"] += n_before - dropped - events.height
        # The sequences are built and written on the pool while this thread writes the event table: both
        # are polars/numpy work that releases the GIL, and each alone leaves a core idle.
        sequences_written = pool.submit(_write_sequences, events, tmp / "sequences" / f"part-{b:05d}.parquet")
        rows["events"] += events.height
        for d, code, n in events.group_by("day", "split").len().iter_rows():  # a split is a range of days
            split_counts[SPLIT_NAMES[code]] += n
            days[d] = days.get(d, 0) + n
        schema = _write_events(events, tmp / "events" / f"part-{b:05d}.parquet", source.actions, item_table,
                               event_item_fields)
        columns.setdefault("events", schema)
        sequences_written.result()
        del events
    shutil.rmtree(tmp / "_stage", ignore_errors=True)

    # 4. Side tables and vocabularies.
    item_table.write_parquet(tmp / "items.parquet")
    user_table.write_parquet(tmp / "users.parquet")
    (tmp / "vocab").mkdir()
    for vocab in vocabs.values():
        vocab.write(tmp / "vocab")
    columns["items"] = {c: str(t) for c, t in item_table.schema.items()}
    columns["users"] = {c: str(t) for c, t in user_table.schema.items()}
    columns["sequences"] = {c: str(t) for c, t in pl.read_parquet_schema(next((tmp / "sequences").iterdir())).items()}
    return Manifest(
        dataset=source.dataset,
        config=config,
        inputs=inputs,
        raw_root=str(raw_root),
        actions=list(source.actions),
        rows=rows,
        vocab_sizes={name: len(v) for name, v in vocabs.items()},
        split={**split, "counts": split_counts},
        days={str(d): n for d, n in sorted(days.items())},
        columns=columns,
        tie_rule=TIE_RULE,
        extra={"buckets": len(buckets), "utc_offset_hours": source.utc_offset_hours},
    )


def _threads() -> int:
    """Threads of prepare's own pool: as many as polars uses, and at least two."""
    return max(2, pl.thread_pool_size())


def _spent() -> pl.DataFrame:
    raise RuntimeError("bucket already processed")


def _collect(lf: pl.LazyFrame, source: RawSource) -> pl.DataFrame:
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise csvfile.diagnose(e, source.log_files(), source.read_schema, null_values=source.null_values) from None


def _stage_buckets(source: RawSource, stage: Path, n_buckets: int, log: Callable[[str], None]) -> int:
    """Stream the logs batch by batch into ``stage/bNNNNN/cMMMMM.parquet`` by a hash of the raw user id.

    Memory is bounded by one batch. Exact duplicates of a row share its user, so they share its bucket.
    """
    rows = 0
    batches = source.scan_logs().collect_batches(chunk_size=1_000_000, engine="streaming")
    try:
        for k, batch in enumerate(_guarded(batches, source)):
            csvfile.validate(batch, source.checks, source.log_files(), source.log_schema, null_values=source.null_values)
            rows += batch.height
            bucket = (batch[source.user_column].hash(seed=0x5EED) % n_buckets).alias("_bucket")
            for (b,), part in batch.with_columns(bucket).partition_by("_bucket", as_dict=True, include_key=False).items():
                folder = stage / f"b{b:05d}"
                folder.mkdir(parents=True, exist_ok=True)
                part.write_parquet(folder / f"c{k:05d}.parquet", compression="lz4")
            if k % 20 == 19:
                log(f"  staged {rows:,} rows")
    finally:
        del batches
    return rows


def _guarded(batches: Any, source: RawSource) -> Iterator[pl.DataFrame]:
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except pl.exceptions.PolarsError as e:
            raise csvfile.diagnose(e, source.log_files(), source.read_schema, null_values=source.null_values) from None
        yield batch


def _count_ids(
    ids: pl.LazyFrame, raw: pl.DataFrame | None, uid: str, iid: str, side_cols: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """Event counts per raw user and item id, and per ``item_id`` the log's item columns (min over rows)."""
    if raw is not None:
        user_counts = count_values(raw[uid])
        if not side_cols:
            return user_counts, count_values(raw[iid]), None
    else:
        user_counts = ids.group_by(pl.col(uid).alias("value")).agg(pl.len().cast(pl.UInt64).alias("count")).collect(engine="streaming")
    per_item = (
        ids.group_by(pl.col(iid).alias("item_id"))
        .agg(pl.len().cast(pl.UInt64).alias("count"), *(pl.col(c).min() for c in side_cols))
        .collect(engine="streaming")
    )
    item_counts = per_item.select(pl.col("item_id").alias("value"), "count")
    return user_counts, item_counts, per_item.drop("count") if side_cols else None


def _kcore(
    ids: pl.LazyFrame, user_counts: pl.DataFrame, item_counts: pl.DataFrame, k: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Iterative k-core on distinct (user, item) pairs: keep users with >= k distinct kept items and items
    with >= k distinct kept users, to a fixpoint. Every kept user and item then has >= k events.

    Each round is one streaming pass over the distinct pairs (memory grows with their number). The
    returned counts are the users' and items' log rows among kept pairs (the vocabulary order).
    """
    rows = ids.select("user_id", "item_id")
    pairs = rows.unique().collect(engine="streaming").lazy()
    kept_u = pairs.group_by("user_id").agg(pl.len().alias("n")).filter(pl.col("n") >= k).select("user_id")
    kept_i = pairs.group_by("item_id").agg(pl.len().alias("n")).filter(pl.col("n") >= k).select("item_id")
    size = (-1, -1)
    while True:
        live = pairs.join(kept_u, on="user_id", how="semi").join(kept_i, on="item_id", how="semi")
        u = live.group_by("user_id").agg(pl.len().alias("n")).filter(pl.col("n") >= k).select("user_id").collect()
        i = live.group_by("item_id").agg(pl.len().alias("n")).filter(pl.col("n") >= k).select("item_id").collect()
        if (u.height, i.height) == size:
            break
        size = (u.height, i.height)
        kept_u, kept_i = u.lazy(), i.lazy()
        if u.height == 0 or i.height == 0:
            raise ValueError(f"the {k}-core is empty: no users and items with {k} distinct partners among each other")
    kept = rows.join(kept_u, on="user_id", how="semi").join(kept_i, on="item_id", how="semi")
    user_counts = kept.group_by(pl.col("user_id").alias("value")).agg(pl.len().cast(pl.UInt64).alias("count"))
    item_counts = kept.group_by(pl.col("item_id").alias("value")).agg(pl.len().cast(pl.UInt64).alias("count"))
    return user_counts.collect(engine="streaming"), item_counts.collect(engine="streaming")


def _side_table(table: SideTable, entity: str, index: Vocab, vocabs: dict[str, Vocab]) -> pl.DataFrame:
    """Side features aligned to ``index`` (row i = index i, row 0 = padding), categoricals remapped.

    Categorical vocabularies count the events of the entities carrying each value (e.g. an author's count
    is the sum of its videos' event counts).
    """
    id_col = f"{entity}_id"
    base = pl.DataFrame({id_col: index.raw, "_w": index.counts})
    frame = base.join(table.frame, on=id_col, how="left", maintain_order="left")
    cols: list[pl.Series] = [
        pl.int_range(1, len(index), dtype=INDEX_DTYPE, eager=True).alias(entity),
        frame[id_col],
    ]
    for name, raw_col in table.categorical.items():
        vocab = Vocab.from_values(name, frame[raw_col], frame["_w"])
        vocabs[name] = vocab
        cols.append(vocab.lookup(frame[raw_col]).alias(name))
    for name, raw_col in table.lists.items():
        exploded = frame.select(pl.col(raw_col), "_w").explode(raw_col)
        vocab = Vocab.from_values(name, exploded[raw_col], exploded["_w"])
        vocabs[name] = vocab
        lengths = frame[raw_col].list.len().fill_null(0)
        flat = vocab.lookup(frame[raw_col].list.explode(keep_nulls=False))
        cols.append(_lists_from_offsets(flat, lengths).alias(name))
    cols.extend(frame[c] for c in table.numeric)
    out = pl.DataFrame(cols)
    padding = pl.DataFrame([pl.Series(c.name, [None], dtype=c.dtype) for c in cols]).with_columns(
        pl.lit(0, INDEX_DTYPE).alias(entity),
        *(pl.lit(0, INDEX_DTYPE).alias(n) for n in table.categorical),
        *(pl.lit([], pl.List(INDEX_DTYPE)).alias(n) for n in table.lists),
    )
    return pl.concat([padding, out])


def _lists_from_offsets(flat: pl.Series, lengths: pl.Series) -> pl.Series:
    """A list column from flat values and per-row lengths (rows with length 0 get an empty list)."""
    row = np.repeat(np.arange(lengths.len()), lengths.to_numpy())
    grouped = pl.DataFrame({"row": row, "v": flat}).group_by("row", maintain_order=True).agg("v")
    full = pl.DataFrame({"row": np.arange(lengths.len())}).join(grouped, on="row", how="left", maintain_order="left")
    return full["v"].fill_null(pl.lit([], pl.List(flat.dtype)))


def _write_sequences(events: pl.DataFrame, path: Path) -> None:
    """One row per user: chronological lists of item, ts, actions, split.

    ``events`` is ordered by day, then user and the tie rule, so a stable reordering by user gives each
    user's events in tie-rule order.
    """
    order = stable_order(events["user"].to_numpy())
    seq = (
        events.select("user", "item", "ts", "actions", "split")[order]
        .with_columns(pl.col("user").set_sorted())
        .group_by("user", maintain_order=True)
        .agg("item", "ts", "actions", "split")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seq.write_parquet(path, compression="lz4")


def stable_order(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer ``keys``.

    When key bits plus row-index bits fit in 64, packs ``key << bits | row`` and sorts those in place:
    several times faster than a stable argsort (a radix-friendly plain sort of distinct values).
    """
    n = keys.shape[0]
    row_bits = max(1, (n - 1).bit_length())
    key_bits = max(1, int(keys.max()).bit_length()) if n else 1
    if key_bits + row_bits > 64:
        return np.argsort(keys, kind="stable")
    packed = np.empty(n, dtype=np.uint64)
    np.copyto(packed, keys, casting="unsafe")  # not astype: several times slower for these casts
    packed <<= np.uint64(row_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    packed &= np.uint64((1 << row_bits) - 1)
    return packed.view(np.int64)  # row indices < 2**63: the same bits


def _write_events(
    events: pl.DataFrame,
    path: Path,
    actions: tuple[str, ...],
    item_table: pl.DataFrame,
    item_fields: list[str],
) -> dict[str, str]:
    """Write one bucket's event table (already ordered by day, user, tie rule); return its schema.

    Adds one boolean column per action and the item's categorical side features (gathered by index).
    """
    head = ["user", "item", "ts", "day", "split", "actions"]
    bits = events["actions"]
    flags = [((bits & (1 << i)) > 0).alias(a) for i, a in enumerate(actions)]
    item = events["item"]
    side = [item_table[f].gather(item) for f in item_fields]
    rest = [events[c] for c in events.columns if c not in head]
    frame = pl.DataFrame([*events.select(head), *flags, *rest, *side])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, compression="lz4", row_group_size=1 << 20)
    return {c: str(t) for c, t in frame.schema.items()}
