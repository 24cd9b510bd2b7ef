"""GEMs' whole beam-search decode at paper scale: brute-force mid-term read vs the indexer (issue #5 §6.2).

``benchmarks/gems_indexer_read.py`` times one layer's mid-term read alone. This script times what a request's
decoder runs, with the model's own :meth:`GEMs.step`: every level of the semantic ID (self-attention with its
cache, the recent / mid-term / lifecycle cross-attentions, the per-stream FFNs, the level's logits) for ``B``
users x ``--beams`` beams, the users' memories and projected keys/values already encoded. Variants:

* ``brute force``: stage 1, the fused dense read of all M mid-term keys;
* ``per-query top-K``: stage 3, each beam its own ``--top-k`` keys (the paper's selection);
* ``shared top-K``: stage 3 with ``GEMsConfig.shared_top_k``: a user's beams pick K keys together.

``project``: the users' keys/values of every stream and layer plus the indexer keys
(:meth:`GEMs.memory_kv`), the same for every variant, shown so the decode can be read against a request.
Each decode is timed eagerly and captured once in a CUDA graph (what the GPU itself spends). Random weights
and memories: cost does not depend on their values; recall is measured on a trained model by
``benchmarks/gems_indexer.py``. Median of ``--repeats`` after warm-up, CUDA events. ``--smoke``: tiny shapes
on the CPU, to check the script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gems_indexer_read import _graphed, _timer  # same timing as the read alone
from recsys.models.gems import GEMs, GEMsConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/gpu/gems_decode.md"))
    ap.add_argument("--users", default="1,8,32,64", help="users per request batch, comma separated")
    ap.add_argument("--beams", type=int, default=100)
    ap.add_argument("--memory", type=int, default=5000, help="mid-term events per user (M)")
    ap.add_argument("--recent", type=int, default=256, help="recent events per user")
    ap.add_argument("--levels", type=int, default=3, help="semantic-ID levels (256 codes each)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--indexer-dim", type=int, default=32, help="the indexer's head width (2 heads)")
    ap.add_argument("--top-k", type=int, default=256)
    ap.add_argument("--shared-top-k", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.users, args.beams, args.memory, args.recent = "2", 4, 300, 16
        args.dim, args.heads, args.top_k, args.shared_top_k, args.repeats = 64, 4, 16, [32], 3
    started = time.perf_counter()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = GEMsConfig(num_items=1000, codebook_sizes=(256,) * args.levels, dim=args.dim, heads=args.heads,
                     layers=args.layers, recent=args.recent, indexer_heads=2, indexer_dim=args.indexer_dim,
                     top_k=args.top_k, dropout=0.0)
    torch.manual_seed(0)
    model = GEMs(cfg).eval().to(dev, dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    timer = _timer(dev, args.repeats)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)
        args.out.write_text("\n".join(lines) + "\n")

    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    variants = [("brute force", 1, None), (f"per-query top-{args.top_k}", 3, None)]
    variants += [(f"shared top-{k}", 3, k) for k in args.shared_top_k]
    log(f"# {name}, torch {torch.__version__}, {dtype}, {time.strftime('%Y-%m-%d %H:%M')}; d {args.dim}, "
        f"{args.heads} heads, {args.layers} layers, {args.levels} levels x 256 codes, {args.beams} beams, "
        f"recent {args.recent} + mid-term {args.memory} + lifecycle {cfg.summary_tokens} tokens, indexer 2 heads x "
        f"{args.indexer_dim}; median of {args.repeats} (ms); speed-up = brute force / variant\n")
    log("| users | project (ms) | " + " | ".join(f"{v[0]}: eager / graph" for v in variants) +
        " | speed-up, graph |")
    log("| --: | --: | " + " | ".join("--:" for _ in variants) + " | :-- |")
    for users in map(int, args.users.split(",")):
        try:
            with torch.inference_mode():
                def stream(length: int) -> dict[str, torch.Tensor]:
                    mask = torch.ones(users, length, dtype=torch.bool, device=dev)
                    mask[:, : length // 50] = False  # a few padded slots, as in real windows
                    return {"memory": torch.randn(users, length, args.dim, device=dev, dtype=dtype), "mask": mask}
                memories = {"recent": stream(args.recent), "mid": stream(args.memory),
                            "life": stream(cfg.summary_tokens)}
                project_ms = timer(lambda: model.memory_kv(memories))
                memory_kv = model.memory_kv(memories)
                n = users * args.beams
                prefix = torch.randint(0, 256, (n, args.levels), device=dev)
                cells, graph_ms = [], []
                for _, stage, shared_k in variants:
                    model.config.shared_top_k = shared_k

                    def decode(stage=stage):
                        state: dict = {}
                        for level in range(args.levels):
                            model.step(prefix[:, :level], state, memories, memory_kv, args.beams, stage)

                    eager = timer(decode)
                    graph = timer(_graphed(decode)) if cuda else float("nan")
                    graph_ms.append(graph)
                    cells.append(f"{eager:.2f} / {graph:.2f}")
                speed = " / ".join(f"{graph_ms[0] / g:.2f}x" for g in graph_ms[1:])
                log(f"| {users} | {project_ms:.2f} | " + " | ".join(cells) + f" | {speed} |")
        except Exception as e:  # noqa: BLE001  (report the shape that failed, go on with the rest)
            log(f"| {users} | failed: {type(e).__name__}: {str(e)[:200]} |")
        if cuda:
            torch.cuda.empty_cache()
    log(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
