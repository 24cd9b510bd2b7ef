"""Data parallelism through Lightning's DDP strategy over 2 gloo processes on CPU: N steps with 2 processes
at per-rank batch B equal N steps with 1 process at batch 2B, for SASRec, MMoE and A2Gen (the rank-sharded batches make the two global
batches the same samples, DDP averages the gradients, distributed MuonRec splits Newton-Schulz)."""

from __future__ import annotations

import datetime
import os
import socket
import time

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.retrieval import RetrievalDataModule
from recsys.models.a2gen import A2GenModule
from recsys.models.distributed import end_spawned_worker
from recsys.models.mmoe import MMoE
from recsys.models.sasrec_module import SASRecModule

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(kind: str, data: str, batch: int, optimizer: str) -> tuple[L.LightningModule, L.LightningDataModule]:
    if kind == "sasrec":
        dm = RetrievalDataModule(data, batch_size=batch, max_len=20, seed=0)
        return SASRecModule(num_items=dm.num_items, dim=16, num_layers=1, num_heads=2, max_len=20, dropout=0.0,
                            optimizer=optimizer, lr=1e-2), dm
    dm = ChainDataModule(data, batch_size=batch, seed=0)
    if kind == "a2gen":
        return A2GenModule(dm.feature_cardinalities, dm.spec_dict, dim=16, dropout=0.0, optimizer=optimizer,
                           lr=1e-2), dm
    return MMoE(dm.feature_cardinalities, dm.spec_dict, dim=16, optimizer=optimizer, lr=1e-2), dm


def _fit(data: str, batch: int, world: int, optimizer: str, kind: str = "sasrec") -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    model, dm = _setup(kind, data, batch, optimizer)
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_steps=STEPS,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, data: str, batch: int, optimizer: str, out: str, kind: str) -> None:
    # what torchrun sets: Lightning then runs in this process instead of launching its own
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    state = _fit(data, batch, world, optimizer, kind)
    torch.save(state, f"{out}.{rank}")
    end_spawned_worker()


# Not A2Gen with MuonRec: Newton-Schulz maps a matrix's tiny singular values to ~1 (3.4445^5 growth), so the
# 1e-7 summation-order noise in a gradient's near-null directions becomes a visible update difference
# (measured 8e-3 on act_cam.context after 3 steps); distributed MuonRec itself is exact on equal gradients
# (tests/optim/test_muonrec_distributed.py).
@pytest.mark.parametrize(("kind", "optimizer"), [("sasrec", "adamw"), ("sasrec", "muonrec"), ("mmoe", "adamw"),
                                                 ("a2gen", "adamw")])
def test_two_processes_equal_one_at_the_same_global_batch(prepared_kuairand, prepared_tmall, tmp_path, kind,
                                                          optimizer):
    """SASRec on KuaiRand-format sequences; MMoE and A2Gen on Tmall-format chains (times known: every loss
    term is a mean over a varying count, made global by recsys.models.distributed)."""
    data = str(prepared_kuairand if kind == "sasrec" else prepared_tmall)
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, _free_port(), data, 16, optimizer, out, kind), nprocs=2, join=True)
    single = _fit(data, 32, 1, optimizer, kind)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    for name, value in single.items():
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0, msg=name)  # replicas agree
        got, want = ranks[0][name], value
        if name.endswith("self_attn.in_proj_bias"):  # drop the key bias: its gradient is 0 in exact arithmetic
            d = want.shape[0] // 3  # (softmax ignores a constant added to every score), so Adam turns the
            got, want = torch.cat([got[:d], got[2 * d:]]), torch.cat([want[:d], want[2 * d:]])  # noise into steps
        # the same sums in another order (each rank its half, then the all-reduce): ~1e-7 apart (AdamW: 1e-5
        # after 3 steps at lr 1e-2). Muon's Newton-Schulz runs in bf16, where such differences can flip a
        # rounding (an update ~4e-3 relative off); the next steps' gradients differ accordingly: 5e-3
        atol = 5e-3 if optimizer == "muonrec" else 1e-5
        torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=f"{name}: {float((got - want).abs().max())}")


def _sum_metric_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from recsys.models.gems_module import SumMetric

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    metric = SumMetric()
    metric.update({"recall@10": torch.tensor([1.0, 0.0, 1.0]) if rank == 0 else torch.tensor([0.0])})
    torch.save(metric.compute(), f"{out}.{rank}")
    end_spawned_worker()


def test_gems_metrics_sum_over_ranks(tmp_path):
    out = str(tmp_path / "metric")
    mp.spawn(_sum_metric_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, join=True)
    assert [torch.load(f"{out}.{r}", weights_only=True)["recall@10"] for r in (0, 1)] == [0.5, 0.5]  # 2 of 4


def _resume_worker(rank: int, world: int, port: int, data: str, ckpt_in: str, ckpt_out: str, epochs: int) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    L.seed_everything(0, verbose=False)
    model, dm = _setup("sasrec", data, 16, "muonrec")
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_epochs=epochs,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm, ckpt_path=ckpt_in or None)
    trainer.save_checkpoint(ckpt_out)  # rank 0 writes: DDP replicas hold the whole state
    if rank == 0:
        torch.save({"epoch": trainer.current_epoch, "step": trainer.global_step}, ckpt_out + ".meta")
    if world > 1:  # spawned (world 1 runs in the test's own process)
        end_spawned_worker()


def test_checkpoints_resume_across_world_sizes(prepared_kuairand, tmp_path):
    """Written by 2 processes, resumed by 1, and the other way round; MuonRec's state resumes with it."""
    data = str(prepared_kuairand)
    two, one, one_then_two, again = (str(tmp_path / n) for n in ("two.ckpt", "one.ckpt", "a.ckpt", "b.ckpt"))
    mp.spawn(_resume_worker, args=(2, _free_port(), data, "", two, 1), nprocs=2, join=True)
    _resume_worker(0, 1, 0, data, two, one, 2)
    first, second = torch.load(two + ".meta"), torch.load(one + ".meta")
    assert (first["epoch"], second["epoch"]) == (1, 2) and second["step"] > first["step"]
    state = torch.load(one, weights_only=True)
    assert any("momentum_buffer" in s for s in state["optimizer_states"][0]["state"].values())
    _resume_worker(0, 1, 0, data, "", one_then_two, 1)
    mp.spawn(_resume_worker, args=(2, _free_port(), data, one_then_two, again, 2), nprocs=2, join=True)
    assert torch.load(again + ".meta")["epoch"] == 2


class _DiesAtStep2(SASRecModule):
    def training_step(self, batch, batch_idx):
        if self.global_rank == 1 and batch_idx == 2:
            raise RuntimeError("rank 1 died at step 2")
        return super().training_step(batch, batch_idx)


def _dying_worker(rank: int, world: int, port: int, data: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    dm = RetrievalDataModule(data, batch_size=16, max_len=20, seed=0)
    model = _DiesAtStep2(num_items=dm.num_items, dim=16, num_layers=1, num_heads=2, max_len=20)
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=DDPStrategy(timeout=datetime.timedelta(seconds=60)),
                        max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)


def test_a_dying_rank_fails_the_job_instead_of_hanging(prepared_kuairand):
    started = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 died at step 2"):
        mp.spawn(_dying_worker, args=(2, _free_port(), str(prepared_kuairand)), nprocs=2, join=True)
    assert time.perf_counter() - started < 60  # the surviving rank is stopped, not left in an all-reduce
