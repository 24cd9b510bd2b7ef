"""Train / validation / test splits: by date boundaries, or leave-last-out per user.

The date split is stored with every prepared event (``split``: 0 train, 1 valid, 2 test). Leave-last-out
is positional, so it is computed where sequences are loaded, from the per-user offsets.

>>> import polars as pl
>>> pl.DataFrame({"day": [20220421, 20220422, 20220429]}).select(
...     assign_date_split(pl.col("day"), 20220421, 20220428)).to_series().to_list()
[0, 1, 2]
>>> leave_last_out(np.array([0, 4, 6, 9])).tolist()   # users with 4, 2 and 3 events
[0, 0, 1, 2, 0, 0, 0, 1, 2]
"""

from __future__ import annotations

import numpy as np
import polars as pl

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")


def assign_date_split(day: pl.Expr, train_end: int, valid_end: int) -> pl.Expr:
    """``split`` code per event: train if ``day <= train_end``, valid if ``<= valid_end``, else test."""
    return (
        pl.when(day <= train_end).then(TRAIN).when(day <= valid_end).then(VALID).otherwise(TEST)
        .cast(pl.UInt8)
        .alias("split")
    )


def leave_last_out(offsets: np.ndarray, *, min_events: int = 3) -> np.ndarray:
    """Split code per event for jagged per-user sequences given by ``offsets`` (length users + 1).

    Each user's last event is test and the one before it validation; users with fewer than
    ``min_events`` events keep all of them in training (they cannot give a training prefix otherwise).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    split = np.zeros(offsets[-1], dtype=np.uint8)
    eligible = lengths >= min_events
    ends = offsets[1:][eligible]
    split[ends - 1] = TEST
    split[ends - 2] = VALID
    return split
