"""The baselines: budget, uniqueness, per-block shares, and the coreset primitives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.distill.baselines import BASELINES, herding, k_center, select
from recsys.distill.selection import quotas
from recsys.distill.stream import ChainStream


@pytest.fixture(scope="module")
def stream(prepared_tmall: Path) -> ChainStream:
    return ChainStream(str(prepared_tmall), block_days=28)


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_memories_fill_the_budget_with_unique_stream_samples(stream: ChainStream, method: str) -> None:
    m = stream.budget_slots(0.05)
    memory = select(stream, method, 0.05, seed=3)
    pos = memory.positions.numpy()
    assert len(pos) == m and len(np.unique(pos)) == m and pos.min() >= 0 and pos.max() < stream.size
    assert torch.equal(memory.soft_labels, stream.inputs().labels[memory.positions])  # hard labels
    assert torch.allclose(memory.weights, torch.ones(m))
    if method != "reservoir":  # per-block shares
        per_block = np.searchsorted(stream.bounds, pos, side="right") - 1
        np.testing.assert_array_equal(np.bincount(per_block, minlength=len(stream)),
                                      quotas(m, np.diff(stream.bounds)))


def test_reservoir_is_uniform_over_the_stream(stream: ChainStream) -> None:
    """Each chain's inclusion frequency over seeds is m / N: the first and second halves of the stream
    are equally represented."""
    m = stream.budget_slots(0.05)
    first_half = [float((select(stream, "reservoir", 0.05, seed=s).positions < stream.size // 2).float().mean())
                  for s in range(20)]
    assert abs(np.mean(first_half) - 0.5) < 0.03
    assert m == len(select(stream, "reservoir", 0.05, seed=0))


def test_herding_tracks_the_mean_and_k_center_covers() -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(400, 5, generator=gen)
    chosen = herding(h, 20)
    random = torch.randperm(400, generator=gen)[:20]
    assert (h[chosen].mean(0) - h.mean(0)).norm() < (h[random].mean(0) - h.mean(0)).norm()
    centers = k_center(h, 20, gen)
    cover = torch.cdist(h, h[centers]).min(1).values.max()
    cover_random = torch.cdist(h, h[random]).min(1).values.max()
    assert len(set(centers.tolist())) == 20 and cover < cover_random
