"""GEMs at lifelong scale (issue #5 §6): one user's request at 1k, 10k and 100k events, peak memory and latency.

A request = encode the user's streams + constrained beam search (width 100, 3 SID levels) for one user,
with the default stream boundaries (recent 64 / mid-term 1,024 / lifecycle the rest, top-K 64). Three
ways to serve the same model (random weights: cost does not depend on them):

* ``cached``   the serving path: the lifecycle state was folded offline into a :class:`LifecycleCache`
               (``d x d`` floats per user); the request reads the recent and mid-term events only, and
               the mid-term stream through the top-K indexer (stage 3).
* ``uncached`` the same streams, but the lifecycle events are summarised at request time.
* ``dense``    no streams: every event before the recent window in one dense cross-attention memory
               (brute force over the whole history).

Each (mode, events) runs in a fresh process (large allocations mmapped, so RSS follows live memory):
peak memory = the process's peak RSS during the first request (reset just before it, Linux
``clear_refs``) minus its RSS before it, after a warm-up request on a 1k-event user; latency = median of
the following requests.
Also reported: the offline cost of building the cache for a user, and of folding in 64 events that aged
out of the mid-term window.

    .venv/bin/python benchmarks/gems_scale.py [--events 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recsys.data.batches import make_kjt
from recsys.models.beam_search import constrained_beam_search
from recsys.models.gems import STREAMS, GEMs, GEMsConfig, LifecycleCache
from recsys.models.semantic_ids import SemanticIds

NUM_ITEMS, RECENT, MID, TOP_K, BEAMS = 20_000, 64, 1024, 64, 100


def _status_mb(key: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1]) / 1024  # kB


def reset_peak_rss() -> float:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5) and return the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM:")


def build(seed: int = 0) -> tuple[GEMs, SemanticIds]:
    torch.manual_seed(seed)
    sids = SemanticIds.build(torch.randn(NUM_ITEMS + 1, 32), levels=3, codebook_size=64, collision="reassign", seed=seed)
    cards = {s: NUM_ITEMS + 1 for s in STREAMS}
    model = GEMs(GEMsConfig(num_items=NUM_ITEMS + 1, codebook_sizes=sids.codebook_sizes, recent=RECENT, top_k=TOP_K,
                            cardinalities=cards)).eval()
    return model, sids


def history(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A user's ``n`` events, oldest first: items, ages (hours before the request), action bits."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, NUM_ITEMS + 1, n), np.linspace(n * 0.5, 0.5, n).astype(np.float32),
            rng.integers(0, 256, n))


def inputs(n: int, mode: str, seed: int = 0):
    """KJT + ages + actions for one user's streams, and the lifecycle events (oldest) kept apart."""
    items, ages, actions = history(n, seed)
    cut_recent = max(n - RECENT, 0)
    cut_mid = 0 if mode == "dense" else max(cut_recent - MID, 0)
    bounds = {"recent": (cut_recent, n), "mid": (cut_mid, cut_recent), "life": (0, cut_mid)}
    if mode == "cached":  # the request carries no lifecycle events: the cache holds their state
        bounds["life"] = (0, 0)
    feats = {s: (items[lo:hi], np.array([hi - lo])) for s, (lo, hi) in bounds.items()}
    return (make_kjt(feats), {s: torch.from_numpy(ages[lo:hi]) for s, (lo, hi) in bounds.items()},
            {s: torch.from_numpy(actions[lo:hi]) for s, (lo, hi) in bounds.items()}, (items[:cut_mid], ages[:cut_mid],
                                                                                     actions[:cut_mid]))


def embed_life(model: GEMs, items: np.ndarray, ages: np.ndarray, actions: np.ndarray) -> torch.Tensor:
    """Lifecycle events ``[n, d]`` as the model embeds them (the other streams empty)."""
    empty = (np.zeros(0, np.int64), np.array([0]))
    kjt = make_kjt({"recent": empty, "mid": empty, "life": (items, np.array([len(items)]))})
    return model.events(model.events.features(kjt), "life", torch.from_numpy(actions), torch.from_numpy(ages))


def lifecycle_cache(model: GEMs, life) -> LifecycleCache:
    """Fold a user's lifecycle events into a cache (offline), in chunks as they would age out."""
    items, ages, actions = life
    cache = LifecycleCache(model.summarizer, model.config.dim)
    with torch.no_grad():
        for lo in range(0, len(items), 4096):
            sl = slice(lo, lo + 4096)
            cache.add(0, embed_life(model, items[sl], ages[sl], actions[sl]))
    return cache


@torch.no_grad()
def request(model: GEMs, sids: SemanticIds, trie, features, ages, actions, lifecycle, stage: int) -> torch.Tensor:
    memories = model.encode(features, ages, actions, lifecycle=lifecycle)
    memory_kv = model.memory_kv(memories)

    def step(prefix: torch.Tensor, state: dict):
        return model.step(prefix, state, memories, memory_kv, prefix.shape[0], stage)  # one user

    codes, _ = constrained_beam_search(step, 1, 3, sids.codebook_sizes, BEAMS, trie, state={},
                                first_step_per_row=True)
    return sids.item_of(codes)


def worker(mode: str, n: int, repeats: int) -> dict:
    model, sids = build()
    trie = sids.trie()
    stage = 1 if mode == "dense" else 3
    warm = inputs(1000, mode, seed=1)
    warm_life = lifecycle_cache(model, warm[3]).state([0]) if mode == "cached" else None
    request(model, sids, trie, *warm[:3], warm_life, stage)

    features, ages, actions, life = inputs(n, mode)
    started = time.perf_counter()
    cache = lifecycle_cache(model, life) if mode == "cached" else None
    build_s = time.perf_counter() - started
    fold_s = None
    if cache is not None:  # 64 more events age out of the mid-term window: fold them in
        extra = history(64, seed=2)
        started = time.perf_counter()
        with torch.no_grad():
            cache.add(0, embed_life(model, *extra))
        fold_s = time.perf_counter() - started
    lifecycle = cache.state([0]) if cache is not None else None
    before = reset_peak_rss()
    request(model, sids, trie, features, ages, actions, lifecycle, stage)
    peak = peak_rss_mb() - before
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request(model, sids, trie, features, ages, actions, lifecycle, stage)
        times.append(time.perf_counter() - started)
    held = sum(v.numel() * v.element_size() for v in (features.values(), *ages.values(), *actions.values()))
    if lifecycle is not None:
        held += sum(t.numel() * t.element_size() for t in lifecycle)
    return {"mode": mode, "events": n, "latency_ms": 1000 * statistics.median(times), "peak_mb": peak,
            "request_inputs_kb": held / 1024, "cache_build_s": build_s if cache is not None else None,
            "fold_64_ms": 1000 * fold_s if fold_s is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--modes", nargs="+", default=["cached", "uncached", "dense"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_work" / "gems_scale.md")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
        return
    rows = []
    for n in args.events:
        for mode in args.modes:
            # large blocks mmapped, so freed memory goes back to the OS and RSS follows live memory
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run([sys.executable, __file__, "--worker", mode, str(n), "--repeats", str(args.repeats)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; beam width {BEAMS}, recent {RECENT}, "
             f"mid-term {MID}, top-K {TOP_K}, d {64}, {NUM_ITEMS:,} items.", "",
             "| events | mode | latency (ms, median) | peak memory of the request (MB) | request inputs (KB) "
             "| cache build (s, offline) | fold 64 aged-out events (ms) |", "| --: | :-- | --: | --: | --: | --: | --: |"]
    for r in rows:
        fmt = (lambda v, spec: "-" if v is None else format(v, spec))
        lines.append(f"| {r['events']:,} | {r['mode']} | {r['latency_ms']:.1f} | {r['peak_mb']:.1f} | "
                     f"{r['request_inputs_kb']:.0f} | {fmt(r['cache_build_s'], '.2f')} | {fmt(r['fold_64_ms'], '.2f')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
