"""Per-rank memory of a 10M-row item table: row-wise sharded by torchrec against replicated by DDP.

    .venv/bin/python benchmarks/sharded_memory.py [--rows 10000000] [--dim 32] [--steps 3] [--work DIR]

The SASRec-style baseline (``SASRecModule``, loss ``bce`` with 8 sampled negatives: a softmax over 10M
items would not fit) with a ``--rows``-row item table trains ``--steps`` steps on 2 gloo processes on CPU,
on a small synthetic KuaiRand-format dataset (the table is bigger than the ids the data uses: the table's
memory is what is measured), twice, each in fresh processes:

- **replicated**: Lightning's ``ddp`` strategy; every rank holds the whole table, its dense gradient and
  AdamW's two moments (what the toolkit did before ``TorchrecStrategy``);
- **row-wise**: ``TorchrecStrategy(sharding={"item": "row_wise"})`` with the table created on the meta
  device (``embedding_device="meta"``), so each rank materializes only its half, trained by fbgemm's fused
  rowwise Adagrad (one state value per row).

Each rank reports its peak RSS (``VmHWM``) and the bytes of the item-table parameters it holds. Also prints
the planner's plan of the row-wise run. Writes ``WORK/sharded_memory.json`` and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank: int, world: int, port: int, mode: str, data: str, rows: int, dim: int, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    warnings.filterwarnings("ignore")
    import lightning as L

    from recsys.data.retrieval import RetrievalDataModule
    from recsys.models.distributed import end_spawned_worker
    from recsys.models.sasrec_module import SASRecModule
    from recsys.models.sharding import TorchrecStrategy, describe_plan

    L.seed_everything(0, verbose=False)
    dm = RetrievalDataModule(data, batch_size=64, max_len=20, seed=0, train_negatives=8)
    sharded = mode == "row_wise"
    model = SASRecModule(num_items=rows, dim=dim, num_layers=1, num_heads=2, max_len=20, loss="bce", lr=1e-3,
                         embedding_device="meta" if sharded else "cpu")
    strategy = TorchrecStrategy(sharding={"item": "row_wise"}) if sharded else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(model, dm)
    seconds = time.perf_counter() - started
    table = trainer.strategy.lightning_module.model.items
    held = sum(p.numel() * p.element_size() for p in table.parameters())
    result = {"rank": rank, "peak_rss_mb": _peak_rss_mb(), "table_bytes_held": held, "seconds": seconds,
              "plan": describe_plan(trainer.strategy.plan) if sharded else None}
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    end_spawned_worker()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "sharded_memory")
    args = parser.parse_args()
    import torch.multiprocessing as mp

    from recsys.data.prepare import PrepareOptions, make_source, prepare
    from recsys.data.synth import synthesize

    args.work.mkdir(parents=True, exist_ok=True)
    raw, data = args.work / "raw", args.work / "kuairand-pure"
    if not (data / "manifest.json").exists():
        synthesize("kuairand-pure", raw, users=500, items=2000, seed=0, overwrite=True)
        prepare(make_source("kuairand-pure", raw), data, PrepareOptions(), log=lambda m: None)
    rows = []
    for mode in ("replicated", "row_wise"):
        out = str(args.work / mode)
        mp.spawn(_worker, args=(2, _free_port(), mode, str(data), args.rows, args.dim, args.steps, out), nprocs=2,
                 join=True)
        for rank in (0, 1):
            rows.append({"mode": mode, **json.loads(Path(f"{out}.{rank}").read_text())})
    table_mb = args.rows * args.dim * 4 / 2**20
    lines = [f"Item table {args.rows:,} x {args.dim} fp32 = {table_mb:,.0f} MiB; 2 gloo processes on CPU; "
             f"{args.steps} steps of SASRec (bce, 8 negatives), batch 64 per rank.", "",
             "| table | rank | item-table bytes held | peak RSS | seconds (fit) |", "| :-- | --: | --: | --: | --: |"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['rank']} | {r['table_bytes_held'] / 2**20:,.0f} MiB | "
                     f"{r['peak_rss_mb']:,.0f} MiB | {r['seconds']:.1f} |")
    plan = next(r["plan"] for r in rows if r["plan"])
    lines += ["", "Plan of the row-wise run:", "", "```", plan, "```", "",
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}; command: {' '.join(sys.argv)}"]
    report = "\n".join(lines)
    print(report)
    (args.work / "sharded_memory.json").write_text(json.dumps(rows, indent=2))
    (args.work / "sharded_memory.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
