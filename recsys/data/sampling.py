"""Negative sampling over the item catalogue: uniform or by popularity, deterministic by seed.

Sampling is keyed by the batch (its sample indices and a seed), not by the worker or the order batches
are drawn in, so the same batch gets the same negatives whatever the number of data-loader workers.
Sampled items may coincide with a positive; the probability is ~1/catalogue size per draw, and the
ranking metrics drop a sampled negative equal to the positive.

>>> s = NegativeSampler(num_items=6, kind="uniform")
>>> neg = s.sample((2, 3), key=np.array([10, 11]), seed=0)
>>> neg.shape, bool(((neg >= 1) & (neg < 6)).all())     # never the padding index 0
((2, 3), True)
>>> bool((neg == s.sample((2, 3), key=np.array([10, 11]), seed=0)).all())
True
"""

from __future__ import annotations

from typing import Literal

import numpy as np


class NegativeSampler:
    """Draw item indices in ``1..num_items-1`` uniformly or with probability ∝ count**alpha."""

    def __init__(
        self,
        num_items: int,
        kind: Literal["uniform", "popularity"] = "uniform",
        counts: np.ndarray | None = None,
        alpha: float = 0.75,
    ) -> None:
        if num_items < 2:
            raise ValueError("need at least one item besides padding")
        self.num_items = num_items
        self.kind = kind
        if kind == "popularity":
            if counts is None or counts.shape[0] != num_items:
                raise ValueError("popularity sampling needs counts for every item index")
            p = np.asarray(counts, dtype=np.float64) ** alpha
            p[0] = 0.0
            if p.sum() <= 0:
                p[1:] = 1.0
            self._cdf = np.cumsum(p / p.sum())
            self.probs = p / p.sum()
        elif kind == "uniform":
            self._cdf = None
            self.probs = np.full(num_items, 1.0 / (num_items - 1))
            self.probs[0] = 0.0
        else:
            raise ValueError(f"unknown sampler {kind!r}: expected 'uniform' or 'popularity'")

    def sample(self, shape: tuple[int, ...], key: np.ndarray, seed: int) -> np.ndarray:
        """``shape`` item indices, deterministic in ``(seed, key)`` (e.g. key = the batch's sample ids)."""
        rng = np.random.default_rng([seed, *_fold(key)])
        if self._cdf is None:
            return rng.integers(1, self.num_items, size=shape, dtype=np.int64)
        idx = np.searchsorted(self._cdf, rng.random(size=shape), side="right")
        return np.clip(idx, 1, self.num_items - 1).astype(np.int64)


def _fold(key: np.ndarray) -> tuple[int, int]:
    """Two 32-bit words summarising an index array (order-sensitive), to seed a generator."""
    key = np.asarray(key, dtype=np.uint64).ravel()
    if key.size == 0:
        return (0, 0)
    weights = np.arange(1, key.size + 1, dtype=np.uint64) * np.uint64(0x9E3779B1)
    h = int(np.bitwise_xor.reduce(key * weights + np.uint64(0x7F4A7C15)))
    return (h & 0xFFFFFFFF, (h >> 32) ^ key.size)
