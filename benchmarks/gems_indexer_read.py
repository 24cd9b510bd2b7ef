"""GEMs' mid-term read alone: the lightning indexer's top-K read vs brute-force cross-attention over a 5,000-event
mid-term stream (issue #5 §6.2; the paper: 103.7 ms brute force vs 32.2 ms indexer at T = 5,000, PAPERS.md §2.3).

``benchmarks/gems_indexer.py`` measures recall and whole requests on a trained model; a request also runs the
recent and lifecycle streams, the FFNs and the beam bookkeeping, which the indexer does not touch. This script
times only what the indexer replaces, one decoder layer's read of the mid-term memory, with the model's own code
(:meth:`GEMs.indexed_read` vs :class:`CrossAttention`, keys/values cached per user as at serving):

* ``brute force``: torch's fused ``scaled_dot_product_attention`` over all M keys (the serving path);
* ``per-query top-K``: indexer scores, ``topk``, each query's own gather and fused attention over its K keys
  (the paper's selection);
* ``shared top-K``: the user's beams pick K keys together (:mod:`recsys.models.shared_index`), scored by the
  plain reference (``ref``) or the fused Triton kernel (``triton``), then one gather per user and the fused
  dense attention of all its queries over those keys;
* ``... graph``: the same call captured once in a CUDA graph and replayed (no kernel launch overheads: what
  the GPU itself spends), brute force and shared alike;
* the shared path split into its parts (scores, ``topk``, gather + attention), each timed alone.

Shapes: B users x T queries per user, T = the beam width (one beam-search step: the beams of a user are its
queries), M = 5,000 keys, a paper-scale layer by default (d 1024, 16 heads, indexer 2 heads x 32; ``--dim``,
``--heads``, ``--indexer-dim`` for others, e.g. the trained model of ``gems_indexer.py``: 64, 4, 16). Random weights and
memories: cost does not depend on their values. Median of ``--repeats`` after warm-up (CUDA events on a GPU).
``--smoke``: tiny shapes on the CPU, to check the script (the Triton rows need ``TRITON_INTERPRET=1`` there).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from unittest.mock import patch

import torch

from recsys.models.gems import GEMs, GEMsConfig
from recsys.models.shared_index import shared_scores_reference, shared_scores_triton, can_fuse


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


def _graphed(fn):
    """``fn`` captured in a CUDA graph: returns the replay (inputs and outputs stay where the capture put them)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/gpu/gems_indexer_read.md"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--memory", type=int, default=5000, help="mid-term events per user (M)")
    ap.add_argument("--grid", default="1x100,8x100,32x100,64x100,8x512,32x512",
                    help="users x queries per user, comma separated")
    ap.add_argument("--top-k", type=int, default=256, help="per-query top-K (the paper's selection)")
    ap.add_argument("--shared-top-k", type=int, nargs="+", default=[1024, 512])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--indexer-dim", type=int, default=32, help="the indexer's head width (2 heads)")
    ap.add_argument("--budget-s", type=float, default=300, help="stop starting new rows after this many seconds")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    dim, heads, memory = (64, 4, 300) if args.smoke else (args.dim, args.heads, args.memory)
    grid = [(2, 8), (3, 16)] if args.smoke else [tuple(map(int, g.split("x"))) for g in args.grid.split(",")]
    top_k, shared_ks = (16, [64]) if args.smoke else (args.top_k, args.shared_top_k)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)
        args.out.write_text("\n".join(lines) + "\n")

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log(f"# {name}, torch {torch.__version__}, {dtype}, {time.strftime('%Y-%m-%d %H:%M')}; d {dim}, {heads} heads, "
        f"M {memory} keys, indexer 2 heads x {args.indexer_dim}, {torch.get_num_threads()} threads, "
        f"per-query top-{top_k}; median of {args.repeats} (ms)\n")
    log("| users x queries | shared K | brute force | brute force, graph | per-query top-K | shared, ref scores | "
        "shared, triton scores | shared triton, graph | speed-up (eager / graph) | parts: scores / topk / "
        "gather+attend | triton vs ref scores: max rel. diff, top-K overlap |")
    log("| :-- | --: | --: | --: | --: | --: | --: | --: | --: | :-- | :-- |")
    timer = _timer(dev, args.repeats)
    torch.manual_seed(0)
    for shared_k in shared_ks:
        cfg = GEMsConfig(num_items=1000, codebook_sizes=(8, 8, 8), dim=dim, heads=heads, layers=1,
                         indexer_heads=2, indexer_dim=args.indexer_dim, top_k=top_k, shared_top_k=shared_k, dropout=0.0)
        model = GEMs(cfg).eval().to(dev, dtype)
        cross, indexer = model.blocks[0].cross["mid"], model.indexer
        dense = lambda q, k, v, mask: cross(q, k, v, mask[:, None, :])[0]  # noqa: E731
        per_query = lambda q, k, v, keys, mask: model.indexed_read(cross, q, k, v, keys, mask)  # noqa: E731
        shared = lambda q, k, v, keys, mask: model.indexed_read(cross, q, k, v, keys, mask, shared=True)  # noqa: E731

        @torch.inference_mode()
        def measure(users: int, queries: int) -> dict[str, object]:
            mem = torch.randn(users, memory, dim, device=dev, dtype=dtype)
            k, v = cross.project(mem)
            keys = indexer.keys(mem)
            mask = torch.ones(users, memory, dtype=torch.bool, device=dev)
            mask[:, : memory // 50] = False  # a few padded slots, as in real windows
            q = torch.randn(users, queries, dim, device=dev, dtype=dtype)
            iq = indexer.q(q).view(users, queries, indexer.heads, indexer.head_dim)
            iw = indexer.w(q)
            row: dict[str, object] = {}
            row["dense"] = timer(lambda: dense(q, k, v, mask))
            try:  # B x T x K gathered rows: the first to run out of memory at large batches
                row["per_query"] = timer(lambda: per_query(q, k, v, keys, mask))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
            with patch("recsys.models.gems.can_fuse", return_value=False):  # the model's path, plain scores
                row["shared_ref"] = timer(lambda: shared(q, k, v, keys, mask))
                ref_out = shared(q, k, v, keys, mask)
            if can_fuse(iq, keys):
                row["shared_triton"] = timer(lambda: shared(q, k, v, keys, mask))
                out = shared(q, k, v, keys, mask)
                s_ref = shared_scores_reference(iq, iw, keys).float()
                s_tri = shared_scores_triton(iq, iw, keys)
                rel = ((s_tri - s_ref).abs().max() / s_ref.abs().max()).item()
                top_ref = s_ref.masked_fill(~mask, float("-inf")).topk(shared_k, -1).indices
                top_tri = s_tri.masked_fill(~mask, float("-inf")).topk(shared_k, -1).indices
                hits = (torch.zeros_like(mask).scatter_(1, top_ref, True)
                        & torch.zeros_like(mask).scatter_(1, top_tri, True)).sum().item()
                diff = (out - ref_out).abs().max().item()
                row["check"] = f"{rel:.1e}, {hits / top_ref.numel():.3f} (outputs {diff:.1e})"
                scores_only = timer(lambda: shared_scores_triton(iq, iw, keys))
                sc = shared_scores_triton(iq, iw, keys).masked_fill(~mask, float("-inf"))
                topk_only = timer(lambda: sc.topk(shared_k, dim=-1, sorted=False))
                row["parts"] = (scores_only, topk_only, row["shared_triton"] - scores_only - topk_only)
                if dev.type == "cuda":
                    row["dense_graph"] = timer(_graphed(lambda: dense(q, k, v, mask)))
                    row["shared_graph"] = timer(_graphed(lambda: shared(q, k, v, keys, mask)))
            return row

        for users, queries in grid:
            if time.perf_counter() - started > args.budget_s:
                log(f"| {users} x {queries} | {shared_k} | skipped: past the {args.budget_s:.0f} s budget |")
                continue
            try:
                row = measure(users, queries)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001  (report the shape that failed, go on with the rest)
                log(f"| {users} x {queries} | {shared_k} | failed: {type(e).__name__}: {str(e)[:200]} |")
                continue
            fmt = lambda key: f"{row[key]:.3f}" if key in row else "-"  # noqa: E731
            best = row.get("shared_triton", row["shared_ref"])
            ratio = f"{row['dense'] / best:.2f}x / " + (
                f"{row['dense_graph'] / row['shared_graph']:.2f}x" if "shared_graph" in row else "-")
            parts = " / ".join(f"{p:.3f}" for p in row["parts"]) if "parts" in row else "-"
            log(f"| {users} x {queries} | {shared_k} | {fmt('dense')} | {fmt('dense_graph')} | {fmt('per_query')} | "
                f"{fmt('shared_ref')} | {fmt('shared_triton')} | {fmt('shared_graph')} | {ratio} | {parts} | "
                f"{row.get('check', '-')} |")
    log(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
