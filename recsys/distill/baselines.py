"""The baselines DIET is compared with, in the same harness (issue #8 Sec. 2): every one writes a memory
of ``m = budget x |stream|`` real chains with hard labels and weight 1, through the same writer.

* ``random``: per block, a uniform sample of the block's share of ``m`` (largest-remainder quotas).
* ``reservoir``: Vitter's Algorithm R over the stream in arrival order (Vitter, "Random Sampling with a
  Reservoir", ACM TOMS 1985): the first ``m`` chains, then chain ``i`` replaces a uniform slot with
  probability ``m / (i + 1)``.
* ``herding`` / ``kcenter``: per block, its share of ``m`` chosen in the embedding space ``h`` of a
  proxy trained on the first block: herding (Welling, ICML 2009; Rebuffi et al., iCaRL, CVPR 2017, Alg. 4)
  greedily matches the block's mean embedding; k-center greedy (Sener & Savarese, ICLR 2018, Alg. 1)
  adds the chain farthest from those chosen.
* ``influence``: DIET's stage 1 repeated per block (a proxy trained on the block, TracIn, stratified
  top-k of its share), with no bi-level update.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from recsys.distill import proxy
from recsys.distill.diet import DIETConfig, deterministic, fresh_proxy, influential, stage_generator
from recsys.distill.memory import Memory
from recsys.distill.selection import quotas
from recsys.distill.stream import ChainStream

Baseline = Literal["random", "reservoir", "herding", "kcenter", "influence"]
BASELINES: tuple[str, ...] = ("random", "reservoir", "herding", "kcenter", "influence")


def herding(h: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows whose running mean tracks the mean of ``h`` greedily (no repeats)."""
    target = h.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    available = torch.ones(len(h), dtype=torch.bool)
    for t in range(1, k + 1):
        gap = ((target * t - total)[None, :] - h).norm(dim=1)
        gap[~available] = float("inf")
        i = int(gap.argmin())
        chosen.append(i)
        total += h[i]
        available[i] = False
    return torch.tensor(chosen, dtype=torch.long)


def k_center(h: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-center: a random first center, then the row farthest from the chosen ones."""
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    first = int(torch.randint(0, len(h), (1,), generator=gen))
    chosen = [first]
    dist = (h - h[first]).norm(dim=1)
    for _ in range(k - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (h - h[i]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


def select(stream: ChainStream, method: Baseline, budget: float, seed: int = 0,
           config: DIETConfig | None = None) -> Memory:
    """The memory a baseline selects over ``stream`` (module docstring)."""
    with deterministic():
        return _select(stream, method, budget, seed, config)


def _select(stream: ChainStream, method: Baseline, budget: float, seed: int, config: DIETConfig | None) -> Memory:
    config = config or DIETConfig(budget=budget, seed=seed)
    m = stream.budget_slots(budget)
    labels = stream.inputs().labels
    if method == "reservoir":
        rng = np.random.default_rng(seed)
        slots = np.arange(min(m, stream.size))
        for i in range(m, stream.size):
            j = rng.integers(0, i + 1)
            if j < m:
                slots[j] = i
        return Memory.from_samples(np.sort(slots), labels[np.sort(slots)], smoothing=0.0)
    sizes = np.diff(stream.bounds)
    share = quotas(m, sizes)
    gen = torch.Generator().manual_seed(seed)
    if method in ("herding", "kcenter"):
        x0 = stream.inputs().take(stream.block(0))
        params, _ = proxy.train(fresh_proxy(stream, config, gen), x0, epochs=config.init_epochs, generator=gen)
        with torch.no_grad():
            h = proxy.hidden(params, stream.inputs())
    chosen = []
    for b, k in enumerate(share):
        block = stream.block(b)
        if method == "random":
            pick = torch.randperm(len(block), generator=gen)[: int(k)].numpy()
            chosen.append(block[pick])
        elif method == "herding":
            chosen.append(block[herding(h[block], int(k)).numpy()])
        elif method == "kcenter":
            chosen.append(block[k_center(h[block], int(k), gen).numpy()])
        elif method == "influence":
            if k:
                chosen.append(influential(stream, block, int(k), config, stage_generator(seed, b)))
        else:
            raise ValueError(f"unknown baseline {method!r}: expected one of {BASELINES}")
    positions = np.sort(np.concatenate(chosen))
    return Memory.from_samples(positions, labels[positions], smoothing=0.0)
