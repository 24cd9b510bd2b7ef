"""What a memory covers of the test split (:func:`recsys.distill.memory.memory_coverage`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.errors import DataError
from recsys.distill.memory import Memory, memory_coverage, write_memory_dataset
from recsys.distill.stream import ChainStream


def test_coverage_of_a_memory_holding_one_items_chains(prepared_kuairand: Path, tmp_path: Path) -> None:
    """A memory of every training chain of the most frequent item (and its users) covers exactly the test
    chains of that item, and of those users."""
    stream = ChainStream(str(prepared_kuairand))
    chains = stream.tables.chains
    user, item = np.asarray(chains.user), np.asarray(chains.item)
    top = np.bincount(item[stream.rows]).argmax()
    positions = np.flatnonzero(item[stream.rows] == top)
    assert len(positions) >= 5
    memory = Memory.from_samples(positions, stream.inputs().labels[torch.as_tensor(positions)])
    out = write_memory_dataset(stream, memory, tmp_path / "one-item", {"method": "hand", "budget": 0.01})
    test = np.flatnonzero(chains.split == 2)
    assert 0 < (item[test] == top).mean() < 1
    got = memory_coverage(out)
    assert got["items"] == pytest.approx((item[test] == top).mean())
    assert got["items_5"] == pytest.approx((item[test] == top).mean())
    assert got["users"] == pytest.approx(np.isin(user[test], user[stream.rows[positions]]).mean())
    assert got["users_full"] == pytest.approx(np.isin(user[test], user[stream.rows]).mean())
    assert got["items_full"] == pytest.approx(np.isin(item[test], item[stream.rows]).mean())
    assert got["items"] < got["items_full"]


def test_coverage_of_a_plain_dataset_is_refused(prepared_kuairand: Path) -> None:
    with pytest.raises(DataError, match="not a distilled memory"):
        memory_coverage(prepared_kuairand)
