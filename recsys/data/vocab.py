"""Vocabularies: raw ids -> contiguous ints, 0 reserved for padding and unknown values.

Indices are assigned by descending frequency (the number of raw log rows carrying the value, counted
before duplicates are dropped; for side features, the rows of the entities carrying it), ties broken by
the raw value, so the assignment is deterministic and independent of file order; index 1 is the most frequent
value. Frequency order also makes hot rows contiguous, which embedding caches and popularity samplers like.

>>> v = Vocab.from_counts("item", pl.DataFrame({"value": [70, 50, 90], "count": [1, 5, 1]}))
>>> v.raw.to_list(), len(v)   # 50 is the most frequent; 70 < 90 breaks their tie; + padding
([50, 70, 90], 4)
>>> v.lookup(pl.Series([90, 50, 12345, None])).to_list()   # unknown and missing -> 0
[3, 1, 0, 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

INDEX_DTYPE = pl.UInt32
#: Largest raw integer id for which remapping uses a dense lookup table (4 bytes per possible id)
#: instead of a hash join: 2**27 ids = 512 MiB at most, and typically far less.
_MAX_LUT_ID = 1 << 27


@dataclass
class Vocab:
    """The raw values of one field in index order (index = position + 1) and their counts."""

    name: str
    raw: pl.Series
    counts: pl.Series

    def __len__(self) -> int:
        """Number of indices including the padding index 0: the embedding table size."""
        return self.raw.len() + 1

    @classmethod
    def from_counts(cls, name: str, counts: pl.DataFrame) -> Vocab:
        """Build from a frame of distinct ``value`` and their ``count`` (nulls are dropped: they map to 0)."""
        ordered = counts.filter(pl.col("value").is_not_null()).sort(
            ["count", "value"], descending=[True, False], maintain_order=False
        )
        return cls(name, ordered["value"].alias(name), ordered["count"].cast(pl.UInt64).alias("count"))

    @classmethod
    def from_values(cls, name: str, values: pl.Series, weights: pl.Series | None = None) -> Vocab:
        """Count ``values`` (optionally weighted) and build the vocabulary."""
        return cls.from_counts(name, count_values(values, weights))

    def lookup(self, values: pl.Series) -> pl.Series:
        """Indices of ``values``; unknown and missing values map to 0."""
        out = _lut_lookup(self.raw, values)
        if out is not None:
            return out.alias(values.name)
        table = pl.DataFrame({"value": self.raw, "idx": pl.int_range(1, len(self), dtype=INDEX_DTYPE, eager=True)})
        joined = (
            pl.DataFrame({"value": values.cast(self.raw.dtype, strict=False)})
            .join(table, on="value", how="left", maintain_order="left")
        )
        return joined["idx"].fill_null(0).alias(values.name)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"idx": pl.int_range(1, len(self), dtype=INDEX_DTYPE, eager=True), "raw": self.raw, "count": self.counts}
        )

    def write(self, folder: Path) -> None:
        self.to_frame().write_parquet(folder / f"{self.name}.parquet")

    @classmethod
    def read(cls, folder: Path, name: str) -> Vocab:
        frame = pl.read_parquet(folder / f"{name}.parquet")
        return cls(name, frame["raw"].alias(name), frame["count"])


def count_values(values: pl.Series, weights: pl.Series | None = None) -> pl.DataFrame:
    """Distinct non-null values of ``values`` and their (weighted) counts, as ``value, count``."""
    dense = _dense_ints(values)
    if dense is not None:
        present_values, mask = dense
        w = None if weights is None else weights.to_numpy()
        counts = np.bincount(present_values, weights=w if w is None or mask is None else w[mask])
        nz = np.flatnonzero(counts)
        return pl.DataFrame(
            {"value": pl.Series(nz).cast(values.dtype), "count": pl.Series(counts[nz]).cast(pl.UInt64)}
        )
    frame = pl.DataFrame({"value": values, "w": weights if weights is not None else pl.repeat(1, values.len(), eager=True)})
    return (
        frame.filter(pl.col("value").is_not_null())
        .group_by("value")
        .agg(pl.col("w").sum().cast(pl.UInt64).alias("count"))
    )


def _dense_ints(values: pl.Series) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Non-null values as a numpy int array when they are small non-negative ints, else ``None``."""
    if not values.dtype.is_integer() or values.len() == 0:
        return None
    lo, hi = values.min(), values.max()
    if lo is None or lo < 0 or hi >= _MAX_LUT_ID or hi > 8 * values.len() + (1 << 20):
        return None
    if values.null_count():
        mask = values.is_not_null().to_numpy()
        return values.drop_nulls().to_numpy(), mask
    return values.to_numpy(), None


def _lut_lookup(raw: pl.Series, values: pl.Series) -> pl.Series | None:
    """Remap through a dense lookup table when raw and query values are small non-negative ints."""
    if not (raw.dtype.is_integer() and values.dtype.is_integer()) or raw.len() == 0:
        return None
    hi = raw.max()
    if raw.min() < 0 or hi >= _MAX_LUT_ID:
        return None
    lut = np.zeros(hi + 2, dtype=np.uint32)  # slot hi + 1 catches unknown and missing values
    lut[raw.to_numpy()] = np.arange(1, raw.len() + 1, dtype=np.uint32)
    if values.null_count():
        values = values.cast(pl.Int64).fill_null(-1)
    v = values.to_numpy()
    if values.len() and (values.min() < 0 or values.max() > hi):
        v = np.where((v >= 0) & (v <= hi), v, hi + 1)
    return pl.Series(lut[v], dtype=INDEX_DTYPE)
