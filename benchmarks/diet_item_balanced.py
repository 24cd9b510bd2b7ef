"""Does a 1% memory rank the zoo better when its slots cover more of the items? (issue #8, a diagnostic)

On BENCHMARKS.md's 600-user, 3,000-item stream a random 1% memory holds the items of only 71% of the test
chains (:func:`recsys.distill.memory.memory_coverage`): an item no slot holds keeps its initial embedding.
This script writes an item-balanced memory where ``diet_ranking.py`` finds cached memories (same ``--out``,
``--users``, ``--items``, ``--synth``), so that ``diet_ranking.py --methods NAME`` trains and ranks the zoo on
it. Over the whole training stream (not block by block: a diagnostic, not a streaming method), item ``i``
with ``n_i`` chains gets ``q_i`` slots, ``q_i`` proportional to ``n_i ** alpha`` (capped at ``n_i``; largest
remainders, then one more slot to items in order of remainder until the budget is filled), drawn uniformly
among its chains; hard labels. ``--weighted`` sets each slot's weight to ``n_i / q_i`` (normalised to mean 1),
so that the weighted memory keeps the stream's item mix in expectation (importance weights). ``alpha`` 1 is
a random sample stratified by item, 0 gives every item the same number of slots.

    .venv/bin/python benchmarks/diet_item_balanced.py --dataset-seed 0 --users 600 --alpha 0.5 --weighted \\
        --name bal50w --synth rows_per_user_day=40 affinity_scale=8 like_bias=-5.5 late_volume=1 \\
        dormant_period=7 --out benchmarks/_work/diet8-dense-u600
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from diet_ranking import parse_synth

from recsys.data.demo import demo_dataset
from recsys.distill.memory import Memory, memory_coverage, write_memory_dataset
from recsys.distill.stream import ChainStream


def item_quotas(n: np.ndarray, m: int, alpha: float) -> np.ndarray:
    """Slots per item (``n``: chains per item): proportional to ``n ** alpha``, at most ``n``, summing to
    ``m``. E.g. ``n = [9, 1, 0]``, m 4, alpha 0.5: exact ``[3, 1, 0]``."""
    present = np.flatnonzero(n)
    want = n[present].astype(float) ** alpha
    exact = m * want / want.sum()
    q = np.zeros(len(n), dtype=np.int64)
    q[present] = np.minimum(np.floor(exact), n[present]).astype(np.int64)
    order = present[np.argsort(-(exact - np.floor(exact)))]
    i = 0
    while q.sum() < min(m, int(n.sum())):
        item = order[i % len(order)]
        if q[item] < n[item]:
            q[item] += 1
        i += 1
    return q


def item_balanced(stream: ChainStream, budget: float, alpha: float, weighted: bool, seed: int) -> Memory:
    m = stream.budget_slots(budget)
    item = np.asarray(stream.tables.chains.item)[stream.rows]
    n = np.bincount(item)
    q = item_quotas(n, m, alpha)
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(item == i), q[i], replace=False)
                                     for i in np.flatnonzero(n) if q[i]]))
    memory = Memory.from_samples(chosen, stream.inputs().labels[torch.as_tensor(chosen)], smoothing=0.0)
    if weighted:
        w = n[item[chosen]] / q[item[chosen]]
        memory.weight_logits = torch.log(torch.expm1(torch.as_tensor(w / w.mean(), dtype=torch.float32)))
    return memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-seed", type=int, default=0)
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--synth", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--weighted", action="store_true", help="importance weights n_i / q_i (default: weight 1)")
    p.add_argument("--name", required=True, help="the method name diet_ranking.py --methods will use")
    p.add_argument("--out", type=Path, required=True, help="diet_ranking.py's --out")
    args = p.parse_args()
    seed = args.dataset_seed
    data, _ = demo_dataset(args.out / "data", dataset="kuairand-pure", users=args.users, items=args.items,
                           seed=seed, log=lambda s: None, **parse_synth(args.synth, p))
    started = time.perf_counter()
    stream = ChainStream(str(data), block_days=1)
    memory = item_balanced(stream, args.budget, args.alpha, args.weighted, seed)
    out = args.out / f"seed{seed}" / f"{args.name}-{args.budget}"
    write_memory_dataset(stream, memory, out, {"method": args.name, "budget": args.budget,
                                               "main_label": stream.main_label, "seed": seed})
    (out.parent / f"{out.name}.seconds").write_text(f"{time.perf_counter() - started}")  # diet_ranking's cache
    print(f"{out}: {len(memory)} slots; covers of the test chains:",
          {k: round(v, 3) for k, v in memory_coverage(out).items()})


if __name__ == "__main__":
    main()
