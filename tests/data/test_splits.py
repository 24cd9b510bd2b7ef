from __future__ import annotations

import numpy as np

from recsys.data.splits import TEST, TRAIN, VALID, leave_last_out


def test_leave_last_out_per_user():
    offsets = np.array([0, 5, 7, 7, 10])  # users with 5, 2, 0 and 3 events
    split = leave_last_out(offsets)
    assert split.tolist() == [TRAIN, TRAIN, TRAIN, VALID, TEST, TRAIN, TRAIN, TRAIN, VALID, TEST]
    assert leave_last_out(offsets, min_events=6).tolist() == [TRAIN] * 10
