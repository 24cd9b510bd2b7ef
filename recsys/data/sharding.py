"""Batches of sample indices for one rank of a data-parallel job: every sample exactly once per epoch across
the ranks, every rank the same number of batches, deterministic for (seed, epoch, rank, world size).

PyTorch's ``DistributedSampler`` pads the index list with repeated samples so that ranks get equal shares
(or drops the tail), and then each rank cuts its share into batches on its own. Here the cut is global: the
epoch's order (a seeded permutation, or ``0..N-1``) is cut into **global batches** of ``world_size x
batch_size`` samples, and each global batch is split into ``world_size`` contiguous, near-equal slices, one
per rank. The last global batch holds the remainder ``R``: split the same way when ``R >= world_size``;
otherwise its ``R`` samples join the previous global batch (a few ranks get one more sample there). So no
sample repeats or goes missing, and no rank runs a batch another rank does not (which would hang the
gradient all-reduce).

With 2 ranks, 10 samples, batch size 2 (no shuffling)::

    global batches  [0 1 2 3] [4 5 6 7] [8 9]
    rank 0          [0 1]     [4 5]     [8]
    rank 1          [2 3]     [6 7]     [9]

The sampler subclasses ``DistributedSampler`` so that Lightning leaves it in place (it only injects its own
sampler where none is distributed) and calls :meth:`set_epoch` every epoch; it yields whole batches (lists),
read by a ``DataLoader`` with ``batch_size=None`` through :class:`BatchIndexed`.

>>> [ShardedBatches(10, 2, num_replicas=2, rank=r, shuffle=False).batches() for r in (0, 1)]
[[[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [9]]]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialized default process group, else ``(1, 0)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ShardedBatches(DistributedSampler):
    """Index batches of ``num_samples`` samples for rank ``rank`` of ``num_replicas`` (see the module docstring)."""

    def __init__(self, num_samples: int, batch_size: int, *, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0) -> None:
        size, me = world()
        self.num_replicas = size if num_replicas is None else num_replicas
        self.rank = me if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside a world of {self.num_replicas}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if 0 < num_samples < self.num_replicas:
            raise ValueError(f"{num_samples} samples cannot be shared by {self.num_replicas} ranks without repeating "
                             "some: use fewer processes or more data")
        self.total, self.batch_size, self.shuffle, self.seed, self.epoch = num_samples, batch_size, shuffle, seed, 0
        self.drop_last = False

    def _global_batches(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each global batch in the epoch's order."""
        step, n = self.num_replicas * self.batch_size, self.total
        bounds = [(s, min(s + step, n)) for s in range(0, n, step)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.num_replicas:
            (a, _), (_, b) = bounds[-2], bounds[-1]
            bounds[-2:] = [(a, b)]  # a remainder too small for one sample per rank joins the batch before
        return bounds

    def batches(self) -> list[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.total, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.total)
        out = []
        w, r = self.num_replicas, self.rank
        for start, end in self._global_batches():
            size = end - start
            out.append(order[start + r * size // w: start + (r + 1) * size // w].tolist())
        return out

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        # A generator: the epoch's order is drawn at the first batch, so a set_epoch() between iter() and
        # the first next() (what Lightning does) takes effect.
        yield from self.batches()

    def __len__(self) -> int:
        return len(self._global_batches())


class BatchIndexed(Dataset):
    """``dataset[list_of_indices]`` -> ``dataset.__getitems__(list_of_indices)``: one whole batch per index
    the sampler yields (what a ``DataLoader(batch_size=None)`` asks for)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> Any:
        return self.dataset.__getitems__(indices)
