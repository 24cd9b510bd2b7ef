"""GEMs' mid-term read alone: the lightning indexer's top-K read vs brute-force cross-attention over a 5,000-event
mid-term stream (issue #5 §6.2; the paper: 103.7 ms brute force vs 32.2 ms indexer at T = 5,000, PAPERS.md §2.3).

``benchmarks/gems_indexer.py`` measures recall and whole requests on a trained model; a request also runs the
recent and lifecycle streams, the FFNs and the beam bookkeeping, which the indexer does not touch. This script
times only what the indexer replaces, one decoder layer's read of the mid-term memory, with the model's own code
(:meth:`GEMs.indexed_read` vs :class:`CrossAttention`, keys/values cached per user as at serving):

* ``brute force (unfused)``: scores, softmax and weighted sum written out (the stage-2 distillation path);
* ``brute force (fused SDPA)``: torch's ``scaled_dot_product_attention`` over all M keys (the serving path);
* ``indexer top-K``: indexer scores, ``topk``, the per-query gather and fused attention over K keys;
* ``... compiled``: the same functions through ``torch.compile`` (fused top-K selection and gather).

Shapes: B users x T queries per user (T = 4: the teacher-forced BOS + 3 SID tokens of training and scoring;
T = beam width: one beam-search step), M = 5,000 keys, a paper-scale layer (d 1024, 16 heads, indexer 2 heads x
32). Random weights: cost does not depend on their values. Median of ``--repeats`` after warm-up (CUDA events on
a GPU). ``--smoke``: tiny shapes, to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from recsys.models.gems import GEMs, GEMsConfig


def _timer(device: torch.device, repeats: int):
    def run(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/gpu/gems_indexer_read.md"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--memory", type=int, default=5000, help="mid-term events per user (M)")
    ap.add_argument("--grid", default="1x100,8x100,64x100,8x512,64x4,256x4",
                    help="users x queries per user, comma separated")
    ap.add_argument("--top-k", type=int, nargs="+", default=[256, 64])
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--budget-s", type=float, default=420, help="skip compiled rows once this much time has passed")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    dim, heads, memory = (64, 4, 300) if args.smoke else (1024, 16, args.memory)
    grid = [(2, 8), (4, 4)] if args.smoke else [tuple(map(int, g.split("x"))) for g in args.grid.split(",")]
    top_ks = [32] if args.smoke else args.top_k
    torch._dynamo.config.cache_size_limit = 256
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)
        args.out.write_text("\n".join(lines) + "\n")

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log(f"# {name}, torch {torch.__version__}, {dtype}, {time.strftime('%Y-%m-%d %H:%M')}; d {dim}, {heads} heads, "
        f"M {memory} keys, indexer 2 heads x 32; median of {args.repeats}\n")
    log("| users x queries | top-K | brute force unfused (ms) | brute force fused (ms) | indexer (ms) | "
        "brute force fused, compiled (ms) | indexer, compiled (ms) | speed-up vs fused (eager / compiled) | "
        "bytes gathered / dense K,V bytes |")
    log("| :-- | --: | --: | --: | --: | --: | --: | --: | --: |")
    timer = _timer(dev, args.repeats)
    torch.manual_seed(0)
    for top_k in top_ks:
        cfg = GEMsConfig(num_items=1000, codebook_sizes=(8, 8, 8), dim=dim, heads=heads, layers=1,
                         indexer_heads=2, indexer_dim=32, top_k=top_k, dropout=0.0)
        model = GEMs(cfg).eval().to(dev, dtype)
        cross = model.blocks[0].cross["mid"]
        dense = lambda q, k, v, mask: cross(q, k, v, mask[:, None, :])[0]  # noqa: E731
        unfused = lambda q, k, v, mask: cross(q, k, v, mask[:, None, :], return_probs=True)[0]  # noqa: E731
        indexed = lambda q, k, v, keys, mask: model.indexed_read(cross, q, k, v, keys, mask)  # noqa: E731
        compiled = {"dense": torch.compile(dense, dynamic=False), "indexed": torch.compile(indexed, dynamic=False)}

        @torch.inference_mode()
        def measure(users: int, queries: int) -> dict[str, float]:
            mem = torch.randn(users, memory, dim, device=dev, dtype=dtype)
            k, v = cross.project(mem)
            keys = model.indexer.keys(mem)
            mask = torch.ones(users, memory, dtype=torch.bool, device=dev)
            mask[:, : memory // 50] = False  # a few padded slots, as in real windows
            q = torch.randn(users, queries, dim, device=dev, dtype=dtype)
            row = {
                "unfused": timer(lambda: unfused(q, k, v, mask)),
                "fused": timer(lambda: dense(q, k, v, mask)),
                "indexer": timer(lambda: indexed(q, k, v, keys, mask)),
            }
            if args.compile and time.perf_counter() - started < args.budget_s:
                row["fused_c"] = timer(lambda: compiled["dense"](q, k, v, mask))
                row["indexer_c"] = timer(lambda: compiled["indexed"](q, k, v, keys, mask))
            return row

        for users, queries in grid:
            try:
                row = measure(users, queries)
            except Exception as e:  # noqa: BLE001  (report the shape that failed, go on with the rest)
                log(f"| {users} x {queries} | {top_k} | failed: {type(e).__name__}: {str(e)[:160]} |")
                continue
            fmt = lambda key: f"{row[key]:.3f}" if key in row else "-"  # noqa: E731
            ratio = f"{row['fused'] / row['indexer']:.2f}x / " + (
                f"{row['fused_c'] / row['indexer_c']:.2f}x" if "indexer_c" in row else "-")
            gathered = queries * top_k / memory  # each query's K rows of k and v vs the user's M rows
            log(f"| {users} x {queries} | {top_k} | {fmt('unfused')} | {fmt('fused')} | {fmt('indexer')} | "
                f"{fmt('fused_c')} | {fmt('indexer_c')} | {ratio} | {gathered:.2f} |")
    log(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
