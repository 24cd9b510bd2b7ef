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
    """Iterate ``(day, events)`` in chronological order, optionally from ``start`` to ``end`` (inclusive)."""

    def __init__(
        self,
        dataset: PreparedDataset,
        *,
        columns: Sequence[str] | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.columns = list(columns) if columns is not None else None
        self.day_list = [d for d in dataset.days() if (start is None or d >= start) and (end is None or d <= end)]

    def __len__(self) -> int:
        return len(self.day_list)

    def __iter__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        lf = self.dataset.scan_events()
        for day in self.day_list:
            frame = lf.filter(pl.col("day") == day)
            if self.columns is not None:
                frame = frame.select(self.columns)
            frame = frame.collect()
            if self.dataset.manifest.extra.get("buckets", 1) > 1 and "user" in frame.columns:
                frame = frame.sort("user", maintain_order=True)  # buckets interleave users
            yield day, frame
