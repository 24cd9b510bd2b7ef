"""Reading a prepared dataset: manifest, jagged per-user sequences, events, side tables, vocabularies.

>>> ds = PreparedDataset("out/kuairand-pure")                        # doctest: +SKIP
>>> seq = ds.sequences()                                              # doctest: +SKIP
>>> seq.item[seq.offsets[0]:seq.offsets[1]]   # user seq.users[0]'s items, oldest first  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.errors import DataError
from recsys.data.manifest import MANIFEST, Manifest
from recsys.data.vocab import Vocab


@dataclass
class Sequences:
    """Every user's events, oldest first, as flat arrays cut by ``offsets`` (jagged layout).

    User ``users[u]`` owns rows ``offsets[u]:offsets[u + 1]`` of ``item``, ``ts``, ``actions``, ``split`` and
    of every array in ``values`` (more per-event columns, e.g. ``play_time_ms``: :meth:`PreparedDataset.sequence_values`).

    >>> s = Sequences(np.array([3, 5]), np.array([0, 2, 3]), np.array([7, 8, 9]), np.zeros(3, np.int64),
    ...               np.array([1, 1, 2], np.uint16), np.zeros(3, np.uint8))
    >>> s.lengths.tolist(), s.item[s.offsets[1]:s.offsets[2]].tolist()
    ([2, 1], [9])
    """

    users: np.ndarray
    offsets: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    actions: np.ndarray
    split: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.users.shape[0]

    def filter_events(self, keep: np.ndarray) -> Sequences:
        """The same users with only the events where ``keep`` is true (users may become empty)."""
        counts = np.add.reduceat(keep.astype(np.int64), self.offsets[:-1]) if keep.size else np.zeros(len(self), np.int64)
        counts[self.lengths == 0] = 0
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return Sequences(self.users, offsets, self.item[keep], self.ts[keep], self.actions[keep], self.split[keep],
                         {k: v[keep] for k, v in self.values.items()})


class PreparedDataset:
    """A folder written by ``recsys data prepare``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise DataError(self.path, "not a prepared dataset (no manifest.json): run `recsys data prepare` first")
        self.manifest = Manifest.read(self.path)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(self.manifest.actions)

    @property
    def num_items(self) -> int:
        """Item vocabulary size including the padding index 0."""
        return self.manifest.vocab_sizes["item"]

    @property
    def num_users(self) -> int:
        return self.manifest.vocab_sizes["user"]

    def action_mask(self, names: str | list[str] | tuple[str, ...] | None) -> int:
        """Bitmask of the named actions (``None`` or ``"any"``: any action; ``"all"``: every event)."""
        if names == "all":
            return 0
        if names is None or names == "any":
            return (1 << len(self.actions)) - 1
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.actions]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown}: this dataset has {list(self.actions)}")
        return sum(1 << self.actions.index(n) for n in names)

    def sequences(self) -> Sequences:
        frame = pl.read_parquet(self.path / "sequences" / "*.parquet").sort("user")
        lengths = frame["item"].list.len().to_numpy()
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def flat(name: str) -> np.ndarray:
            return frame[name].explode().to_numpy()

        return Sequences(frame["user"].to_numpy(), offsets, flat("item"), flat("ts"), flat("actions"), flat("split"))

    def sequence_values(self, column: str, sequences: Sequences | None = None) -> np.ndarray:
        """The event table's ``column`` per event, aligned with :meth:`sequences`' flat arrays (the
        sequences keep item, ts, actions and split only; pass them if already read).

        Each user's events live in one bucket file of the event table, in the order of their sequence
        (``recsys.data.prepare``), so a stable sort of all rows by user is that order: checked against
        the sequences' items, so a dataset edited by hand fails here instead of misaligning."""
        schema = self.scan_events().collect_schema()
        if column not in schema:
            raise DataError(self.path / "events", f"no column {column!r} in the event table (has {', '.join(schema)})")
        from recsys.data.prepare import stable_order  # the order prepare wrote the sequences in

        frame = self.scan_events().select("user", "item", column).collect()
        order = stable_order(frame["user"].to_numpy())
        items = frame["item"].to_numpy()[order]
        if not np.array_equal(items, (sequences or self.sequences()).item):
            raise DataError(self.path / "events", "the event table's rows do not match sequences/ (rebuild the "
                            "prepared dataset with `recsys data prepare`)")
        return frame[column].to_numpy()[order]

    def scan_events(self) -> pl.LazyFrame:
        """The event table (all buckets), lazily: filter on ``day`` to read only that day's row groups."""
        return pl.scan_parquet(self.path / "events" / "*.parquet")

    def days(self) -> list[int]:
        return [int(d) for d in self.manifest.days]

    def items(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "items.parquet")

    def users(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "users.parquet")

    def vocab(self, name: str) -> Vocab:
        return Vocab.read(self.path / "vocab", name)
