"""Optimizer step time: MuonRec vs torch.optim.Muon (+ AdamW for the rest) vs AdamW, side by side.

Three parameter sets:

* ``stack``: 12 matrices 256x256 and 4 of 256x1024 (the stack of issue #3 and ../shared/GPU.md);
* ``sasrec``: every parameter of the toolkit's SASRec-style model (dim 64, 2 blocks, 3,001 items), grouped
  by MuonRec's ``muonrec`` preset; ``torch.optim.Muon`` gets the same Muon matrices and AdamW the rest;
* ``a2gen``: every parameter of A2Gen (IAG, dim 32, 4 heads) on KuaiRand-Pure-sized vocabularies
  (27,285 users, 7,551 videos), grouped the same way.

MuonRec runs twice: with its default Newton-Schulz dtype (``ns_dtype="auto"``: float32 on CPUs without bf16 matmul
instructions, else bf16) and with ``ns_dtype="bfloat16"`` (``torch.optim.Muon``'s everywhere). The floor is the Newton-Schulz
FLOPs (5 quintic steps: ``5 * (4 m^2 n + 2 m^3)`` per ``m x n`` matrix, ``m <= n``) over the matmul rate of
the default dtype measured here on 512x512 and 256x1024 products. Step times are the
median of ``--repeats`` timed steps after warm-up, gradients fixed (the step's own cost only).

    .venv/bin/python benchmarks/optim_step.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from recsys.data.chains import SPECS
from recsys.models.a2gen import A2Gen
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.optim import MuonRec, build_param_groups
from recsys.optim.newton_schulz import ns_dtype


class TorchMuonWithAdamW:
    """torch.optim.Muon on the Muon family and torch.optim.AdamW on the rest, stepped together."""

    def __init__(self, muon: list[torch.nn.Parameter], adamw: list[torch.nn.Parameter], muon_lr: float, adamw_lr: float):
        self.optimizers = [torch.optim.Muon(muon, lr=muon_lr, weight_decay=0.0)]
        if adamw:
            self.optimizers.append(torch.optim.AdamW(adamw, lr=adamw_lr))

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


def ns_flops(shapes: list[tuple[int, int]], steps: int = 5) -> float:
    total = 0.0
    for rows, cols in shapes:
        m, n = min(rows, cols), max(rows, cols)
        total += steps * (4 * m * m * n + 2 * m**3)
    return total


def matmul_rate(dtype: torch.dtype = torch.bfloat16) -> float:
    """Best FLOP/s of ``dtype`` matmuls of the Newton-Schulz sizes on this machine."""
    best = 0.0
    for m, k, n in ((512, 512, 512), (256, 256, 1024), (256, 1024, 256)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        t = time.perf_counter()
        reps = 30
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t))
    return best


def time_steps(optimizer, params: list[torch.nn.Parameter], repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def parameter_sets() -> dict[str, tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]]:
    """name -> (Muon-family matrices, AdamW-family parameters)."""
    torch.manual_seed(0)
    stack = [torch.nn.Parameter(torch.randn(256, 256)) for _ in range(12)]
    stack += [torch.nn.Parameter(torch.randn(256, 1024)) for _ in range(4)]
    sets = {"stack": (stack, [])}
    model = SASRec(SASRecConfig(num_items=3001, dim=64, num_layers=2, num_heads=2, max_len=50))
    sets["sasrec"] = tuple(g["params"] for g in build_param_groups(model, "muonrec"))
    cardinalities = {"user": 27_286, "item": 7_552, "author": 6_511, "video_type": 3, "upload_type": 15, "tags": 70,
                     "user_active_degree": 10, "tab": 15, "hour": 24, "history": 7_552, "history_author": 6_511,
                     "history_video_type": 3, "history_upload_type": 15}
    a2gen = A2Gen(cardinalities, SPECS["kuairand"], dim=32, heads=4)
    sets["a2gen"] = tuple(g["params"] for g in build_param_groups(a2gen, "muonrec"))
    return sets


def run(repeats: int) -> str:
    dtype = ns_dtype("cpu")
    rate, bf16_rate = matmul_rate(dtype), matmul_rate(torch.bfloat16)
    rows = []
    for name, (muon, adamw) in parameter_sets().items():
        shapes = [tuple(p.reshape(p.shape[0], -1).shape) for p in muon]
        floor_ms = ns_flops(shapes) / rate * 1000
        everything = muon + adamw

        def muonrec(ns: str) -> MuonRec:
            return MuonRec([{"params": muon, "use_muon": True, "lr": 0.02, "ns_dtype": ns},
                            *([{"params": adamw, "use_muon": False, "lr": 1e-3}] if adamw else [])])

        results = {
            "MuonRec": time_steps(muonrec("auto"), everything, repeats),
            "MuonRec bf16": time_steps(muonrec("bfloat16"), everything, repeats),
            "torch.optim.Muon (+AdamW)": time_steps(TorchMuonWithAdamW(muon, adamw, 0.02, 1e-3), everything, repeats),
            "AdamW (all)": time_steps(torch.optim.AdamW(everything, lr=1e-3), everything, repeats),
        }
        n_params = sum(p.numel() for p in everything)
        rows.append((name, len(muon), len(adamw), n_params, floor_ms, results))
    lines = [
        f"matmul rate (best of 512^3, 256x256x1024, 256x1024x256): {str(dtype).removeprefix('torch.')} "
        f"{rate / 1e9:,.0f} GFLOP/s, bfloat16 {bf16_rate / 1e9:,.0f} GFLOP/s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        "",
        "| parameters | Muon matrices | AdamW tensors | NS5 floor ms | MuonRec ms | MuonRec, bf16 NS ms "
        "| torch.optim.Muon (+AdamW) ms | AdamW ms | MuonRec / torch Muon |",
        "| :-- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for name, n_muon, n_adamw, n_params, floor_ms, r in rows:
        ratio = r["MuonRec"] / r["torch.optim.Muon (+AdamW)"]
        lines.append(
            f"| {name} ({n_params / 1e6:.2f}M) | {n_muon} | {n_adamw} | {floor_ms:.2f} | {r['MuonRec']:.2f} "
            f"| {r['MuonRec bf16']:.2f} | {r['torch.optim.Muon (+AdamW)']:.2f} | {r['AdamW (all)']:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    print(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
