"""Rank-sharded batches: every sample exactly once per epoch across ranks, equal batch counts, deterministic
for (seed, epoch, rank, world size); the data modules load through it, also under a simulated world."""

from __future__ import annotations

import pytest
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.sharding import ShardedBatches


@pytest.mark.parametrize("n", [1, 7, 10, 64, 65, 97, 1000])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_each_sample_once_and_equal_batch_counts(n, world, batch):
    if n < world:
        with pytest.raises(ValueError, match="cannot be shared"):
            ShardedBatches(n, batch, num_replicas=world, rank=0)
        return
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            s = ShardedBatches(n, batch, num_replicas=world, rank=rank, seed=5)
            s.set_epoch(epoch)
            per_rank.append(s.batches())
            assert len(per_rank[-1]) == len(s)
        assert len({len(b) for b in per_rank}) == 1  # same number of batches on every rank
        assert all(len(b) >= 1 for batches in per_rank for b in batches)  # no empty batch
        seen = sorted(i for batches in per_rank for b in batches for i in b)
        assert seen == list(range(n))  # nothing repeated, nothing dropped
        # a global step uses at most world x batch samples, except where a tiny remainder joined it
        steps = list(zip(*per_rank))
        assert all(sum(map(len, step)) <= world * batch + world - 1 for step in steps)


def test_deterministic_and_reshuffled_per_epoch():
    def order(seed, epoch, rank=0, world=2):
        s = ShardedBatches(100, 8, num_replicas=world, rank=rank, seed=seed)
        s.set_epoch(epoch)
        return s.batches()

    assert order(1, 0) == order(1, 0) and order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert order(1, 0, rank=0) != order(1, 0, rank=1)
    unshuffled = ShardedBatches(10, 2, num_replicas=2, rank=1, shuffle=False)
    assert unshuffled.batches() == [[2, 3], [6, 7], [9]]


def test_data_module_shards_by_rank(prepared_tmall):
    """Two simulated ranks of a ChainDataModule together see every training chain once per epoch."""
    seen, counts = [], []
    for rank in (0, 1):
        dm = ChainDataModule(str(prepared_tmall), batch_size=32, seed=3)
        dm._world = lambda rank=rank: (2, rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(2)
        batches = list(loader)
        counts.append(len(batches))
        seen += [int(r) for b in batches for r in b.features["item"].values()]  # one item per sample
    dm = ChainDataModule(str(prepared_tmall), batch_size=64, seed=3)
    everything = [int(r) for b in dm.train_dataloader() for r in b.features["item"].values()]
    assert counts[0] == counts[1] and sorted(seen) == sorted(everything)


def test_day_stream_shards_events_by_user(prepared_tmall):
    from recsys.data.prepared import PreparedDataset
    from recsys.data.stream import DayStream

    dataset = PreparedDataset(prepared_tmall)
    full = list(DayStream(dataset))
    parts = [list(DayStream(dataset, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(p) == len(full) for p in parts)
    for d, (day, events) in enumerate(full):
        shards = [p[d][1] for p in parts]
        assert all(p[d][0] == day for p in parts)
        assert sum(s.height for s in shards) == events.height
        users = [set(s["user"].to_list()) for s in shards]
        assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
        import polars as pl

        assert pl.concat(shards).sort(events.columns).equals(events.sort(events.columns))
