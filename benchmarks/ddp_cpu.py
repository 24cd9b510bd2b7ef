"""Training throughput with 1 and 2 data-parallel processes on this CPU (issue #10 §5): Lightning's DDP
strategy over gloo, rank-sharded batches, MuonRec with its Newton-Schulz work split across ranks.

Each configuration trains MMoE (the Tmall config's sizes) for ``--steps`` steps on a synthetic Tmall-format
release; samples/s is measured over the steps after ``--warmup``, from rank 0's clock, with the global batch
(per-rank batch x processes). Threads: one process gets all cores; with two, each gets half, so the machine
is never oversubscribed. Command: ``.venv/bin/python benchmarks/ddp_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import lightning as L
import torch
import torch.multiprocessing as mp

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.prepare import PrepareOptions, make_source, prepare
from recsys.data.synth import synthesize
from recsys.models.distributed import end_spawned_worker
from recsys.models.mmoe import MMoE


class StepClock(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.steps = warmup, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.started = time.perf_counter()


def run(rank: int, world: int, port: int, data: str, batch: int, steps: int, warmup: int, out: str) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    torch.set_num_threads(max(1, os.cpu_count() // world))
    L.seed_everything(0, verbose=False)
    dm = ChainDataModule(data, batch_size=batch, seed=0)
    model = MMoE(dm.feature_cardinalities, dm.spec_dict)
    clock = StepClock(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_steps=steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(model, dm)
    seconds = time.perf_counter() - clock.started
    if rank == 0:
        Path(out).write_text(f"{(steps - warmup) * batch * world / seconds:.1f}")
    if world > 1:  # spawned (world 1 runs in the main process)
        end_spawned_worker()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=512, help="per-rank batch")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/ddp"))
    args = ap.parse_args()
    data = args.work / "tmall"
    if not (data / "manifest.json").exists():
        synthesize("tmall", args.work / "raw", users=args.users, items=2000, seed=0)
        prepare(make_source("tmall", args.work / "raw"), data, PrepareOptions(), log=lambda _: None)
    rows = []
    for world, batch in ((1, args.batch), (2, args.batch), (2, args.batch // 2), (1, 2 * args.batch)):
        out = str(args.work / f"rate-{world}-{batch}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        params = (world, port, str(data), batch, args.steps, args.warmup, out)
        if world == 1:
            run(0, *params)
        else:
            mp.spawn(run, args=params, nprocs=world, join=True)
        rows.append((world, batch, float(Path(out).read_text())))
        print(f"| {world} | {batch} | {world * batch} | {rows[-1][2]:,.0f} |", flush=True)
    print("\n| processes | batch per rank | global batch | samples/s |\n| --: | --: | --: | --: |")
    for world, batch, rate in rows:
        print(f"| {world} | {batch} | {world * batch} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
