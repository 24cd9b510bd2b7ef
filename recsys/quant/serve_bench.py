"""``recsys serve-bench ARTIFACT [ARTIFACT ...]``: request latency and throughput of serving artifacts side
by side (e.g. the same model exported as fp32, bf16 and fp8), at several beam widths and batch sizes.

Every request batch holds users whose recent and mid-term windows are full (the worst case of a request),
random items of the catalogue, and a cached lifecycle state; the same requests go to every artifact.
Latency = median wall time of ``recommend`` over ``repeats`` runs after one warm-up; throughput = users
served per second at that batch size. On a CPU, FP8 is a size win, not a speed win: the FP8 linears
dequantize to fp32 before their matmul (no FP8 arithmetic on CPUs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from recsys.quant.runtime import GEMsRuntime


def _requests(runtime: GEMsRuntime, batch: int, seed: int) -> tuple[list[dict], list[tuple]]:
    g = torch.Generator().manual_seed(seed)
    n = runtime.recent + runtime.mid
    num_items = int(runtime.config["num_items"])
    histories, states = [], []
    for _ in range(batch):
        histories.append({"items": torch.randint(1, num_items, (n,), generator=g),
                          "actions": torch.randint(1, 4, (n,), generator=g),
                          "ages": torch.sort(torch.rand(n, generator=g) * 2000, descending=True).values})
        if "life" in runtime.config["streams"]:
            old = {"items": torch.randint(1, num_items, (500,), generator=g), "actions": torch.ones(500, dtype=torch.long),
                   "ages": torch.full((500,), 5000.0)}
            states.append(runtime.fold(old))
    return histories, (states or None)


def serve_bench(artifacts: list[Path], beams: list[int], batches: list[int], repeats: int = 5, seed: int = 0,
                log: Callable[[str], None] = print) -> str:
    """The Markdown table; each line also goes to ``log`` as it is measured."""
    runtimes = {}
    for path in artifacts:
        runtime = GEMsRuntime.load(path)
        runtimes[f"{Path(path).name} ({runtime.manifest['precision']})"] = runtime
    sizes = {name: sum(e["bytes"] for e in r.manifest["files"].values()) for name, r in runtimes.items()}
    device = next(iter(runtimes.values())).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    lines = [f"torch {torch.__version__}, {where}; median of {repeats} after a warm-up; "
             "users with full recent and mid-term windows and a cached lifecycle state.", "",
             "| artifact | MB on disk | beam | batch | latency (ms) | users / s |", "| :-- | --: | --: | --: | --: | --: |"]
    for line in lines:
        log(line)
    for beam in beams:
        for batch in batches:
            for name, runtime in runtimes.items():
                histories, states = _requests(runtime, batch, seed)
                runtime.recommend(histories, k=beam, lifecycle=states)  # warm-up
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    runtime.recommend(histories, k=beam, lifecycle=states)
                    times.append(time.perf_counter() - started)
                ms = 1000 * statistics.median(times)
                lines.append(f"| {name} | {sizes[name] / 1e6:.2f} | {beam} | {batch} | {ms:.1f} | {batch / ms * 1000:.1f} |")
                log(lines[-1])
    return "\n".join(lines)
