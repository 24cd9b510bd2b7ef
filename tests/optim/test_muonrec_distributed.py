"""Distributed MuonRec over 2 gloo processes: each rank orthogonalizes half of the matrices, the gathered
update equals the single-process update."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from recsys.models.distributed import end_spawned_worker
from recsys.optim import MuonRec


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 32), nn.Linear(32, 16), nn.Linear(16, 16), nn.LayerNorm(16))


def _train(steps: int = 3) -> tuple[dict[str, torch.Tensor], int]:
    model = _model()
    opt = MuonRec.from_model(model, preset="keller", muon_lr=0.02, adamw_lr=1e-3)
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)  # the same (all-reduced) gradients on every rank
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, opt.ns_matrices


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    state, count = _train()
    torch.save({"state": state, "count": count}, f"{out}.{rank}")
    end_spawned_worker()


def test_two_ranks_split_the_work_and_match_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, join=True)
    single, count = _train()
    assert count == 0  # no process group: nothing is split
    results = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    matrices = 5  # keller: every Linear weight here (no layer is named like an output head); 4 shapes
    counts = [r["count"] for r in results]
    assert sorted(counts) == [3 * 2, 3 * 3]  # dealt round-robin across shapes: 3 + 2 per step, none twice
    for r in results:
        for name, value in single.items():
            torch.testing.assert_close(r["state"][name], value, rtol=0, atol=1e-6, msg=name)
