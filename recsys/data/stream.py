"""The day-by-day stream over a prepared event table, for continual training and dataset distillation.

Events are stored ordered by day, so each day reads only the Parquet row groups that hold it. Within a
day, events come ordered by user, then the tie rule of :mod:`recsys.data.events`.

>>> for day, events in DayStream(PreparedDataset("out/kuairand-pure")):   # doctest: +SKIP
...     model.update(events)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl

from recsys.data.prepared import PreparedDataset


class DayStream:
    """Iterate ``(day, events)`` in chronological order, optionally from ``start`` to ``end`` (inclusive).

    Under data parallelism each rank streams the events of its own users (``user % num_replicas == rank``;
    default: the initialized process group's, else everything): every event reaches exactly one rank, a
    user's history stays on one rank, and the filter is pushed into the Parquet scan."""

    def __init__(
        self,
        dataset: PreparedDataset,
        *,
        columns: Sequence[str] | None = None,
        start: int | None = None,
        end: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        from recsys.data.sharding import world

        self.dataset = dataset
        self.columns = list(columns) if columns is not None else None
        self.day_list = [d for d in dataset.days() if (start is None or d >= start) and (end is None or d <= end)]
        size, me = world()
        self.num_replicas = size if num_replicas is None else num_replicas
        self.rank = me if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside a world of {self.num_replicas}")

    def __len__(self) -> int:
        return len(self.day_list)

    def __iter__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        lf = self.dataset.scan_events()
        for day in self.day_list:
            frame = lf.filter(pl.col("day") == day)
            if self.num_replicas > 1:
                frame = frame.filter(pl.col("user") % self.num_replicas == self.rank)
            if self.columns is not None:
                frame = frame.select(self.columns)
            frame = frame.collect()
            if self.dataset.manifest.extra.get("buckets", 1) > 1 and "user" in frame.columns:
                frame = frame.sort("user", maintain_order=True)  # buckets interleave users
            yield day, frame
