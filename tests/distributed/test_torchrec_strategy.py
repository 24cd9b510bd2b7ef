"""TorchrecStrategy: embedding tables sharded by torchrec's DistributedModelParallel under Lightning, over 2
gloo processes on CPU. N steps with 2 processes equal N steps with 1 process at the same global batch (both
sharded, both on the fused rowwise-Adagrad table optimizer); sharded checkpoints resume across world sizes."""

from __future__ import annotations

import os
import socket
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.lifelong import LifelongDataModule
from recsys.data.retrieval import RetrievalDataModule
from recsys.models import sharded_checkpoint
from recsys.models.a2gen import A2GenModule
from recsys.models.distributed import end_spawned_worker
from recsys.models.gems_module import GEMsModule
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.sasrec_module import SASRecModule
from recsys.models.sharding import TorchrecStrategy, constraints, describe_plan, plan_sharding

STEPS = int(os.environ.get("STEPS", 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(kind: str, data: str, batch: int) -> tuple[L.LightningModule, L.LightningDataModule, dict]:
    """The module, its data, and the strategy's arguments (forced sharding per table)."""
    if kind.startswith("sasrec"):
        dm = RetrievalDataModule(data, batch_size=batch, max_len=20, seed=0)
        device = "meta" if kind == "sasrec_meta" else "cpu"
        optimizer = "muonrec" if kind == "sasrec_muonrec" else "adamw"
        sharding = "data_parallel" if kind == "sasrec_dp" else "row_wise"
        return SASRecModule(num_items=dm.num_items, dim=16, num_layers=1, num_heads=2, max_len=20, dropout=0.0,
                            lr=1e-2, optimizer=optimizer, embedding_device=device), dm, {"sharding": {"item": sharding}}
    if kind == "a2gen":
        dm = ChainDataModule(data, batch_size=batch, seed=0)
        # item row-wise, user table-wise, the small tables left to the planner
        return A2GenModule(dm.feature_cardinalities, dm.spec_dict, dim=16, dropout=0.0, optimizer="adamw",
                           lr=1e-2), dm, {"sharding": {"item": "row_wise", "user": "table_wise"}}
    # GEMs trains its stages in turn: parameters of later stages get no gradient in stage 1
    dm = LifelongDataModule(data, recent=8, mid=32, max_train_per_user=8, batch_size=batch, eval_batch_size=8,
                            sid_levels=2, sid_codebook=16, seed=0)
    return GEMsModule(dm.semantic_ids_path, dm.feature_cardinalities, item_attributes=dm.item_attributes_path, dim=16, heads=2, layers=1, encoder_layers=1,
                      top_k=4, summary_tokens=3, beam_width=4, ks=[5], dropout=0.0, optimizer="adamw",
                      lr=1e-2), dm, {"sharding": {"item": "row_wise"}, "find_unused_parameters": True}


def _full_state(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """The module's state with sharded tables gathered whole (on rank 0; every rank takes part)."""
    out = {}
    for key, value in trainer.strategy.lightning_module.state_dict().items():
        if hasattr(value, "local_shards"):
            full = torch.zeros(value.size(), dtype=value.dtype) if trainer.global_rank == 0 else None
            value.gather(dst=0, out=full)
            out[key] = full
        else:
            out[key] = value.detach().clone()
    return out


def _fit(kind: str, data: str, world: int, *, epochs: int | None = None, ckpt_in: str | None = None,
         ckpt_out: str | None = None) -> tuple[dict[str, torch.Tensor], int]:
    warnings.filterwarnings("ignore")
    L.seed_everything(0, verbose=False)
    model, dm, strategy = _setup(kind, data, 32 // world)
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=TorchrecStrategy(**strategy),
                        max_steps=-1 if epochs else STEPS, max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm, ckpt_path=ckpt_in)
    if ckpt_out:
        trainer.save_checkpoint(ckpt_out)
    return _full_state(trainer), trainer.global_rank


def _worker(rank: int, world: int, port: int, kind: str, data: str, out: str, epochs: int | None,
            ckpt_in: str | None, ckpt_out: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0")
    state, global_rank = _fit(kind, data, world, epochs=epochs, ckpt_in=ckpt_in, ckpt_out=ckpt_out)
    if global_rank == 0:
        torch.save(state, out)
    end_spawned_worker()


def _run(world: int, kind: str, data: str, out: str, epochs: int | None = None, ckpt_in: str | None = None,
         ckpt_out: str | None = None) -> dict[str, torch.Tensor]:
    mp.spawn(_worker, args=(world, _free_port(), kind, data, out, epochs, ckpt_in, ckpt_out), nprocs=world, join=True)
    return torch.load(out, weights_only=True)


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        a, b = got[name], value
        # A key bias adds one constant to all of a query's scores, which softmax ignores: its gradient is 0 in
        # exact arithmetic, and Adam turns the rounding noise into steps of size lr. Compared without it.
        if name.endswith("in_proj_bias"):
            d = b.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        if name.endswith(".k.bias"):
            continue
        if name.endswith(".kv.bias"):  # GEMs' cross-attention: [k | v] biases
            a, b = a[b.shape[0] // 2:], b[b.shape[0] // 2:]
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=f"{name}: {float((a - b).abs().max())}")


def test_plan_forces_and_plans_per_table_and_refuses_what_cpu_cannot_run():
    model = SASRec(SASRecConfig(num_items=1000, dim=16))
    plan = plan_sharding(model, 2, sharding={"item": "row_wise"})
    text = describe_plan(plan)
    assert "items  item  row_wise  fused" in text and "rank 0: rows 0-499" in text and "rank 1: rows 500-999" in text
    planned = plan_sharding(model, 4)  # no constraint: the planner picks, within what CPU kernels run
    assert planned.plan["items"]["item"].sharding_type in ("table_wise", "row_wise")
    with pytest.raises(ValueError, match="column_wise sharding is not run on CPU"):
        constraints({"item": 1000}, {"item": "column_wise"}, "cpu")
    with pytest.raises(ValueError, match="unknown table"):
        constraints({"item": 1000}, {"items": "row_wise"}, "cpu")
    with pytest.raises(ValueError, match="unknown sharding type"):
        constraints({"item": 1000}, {"item": "diagonal"}, "cpu")
    assert constraints({"item": 1000}, {"item": "data_parallel"}, "cuda")["item"].sharding_types == ["data_parallel"]


@pytest.mark.parametrize("kind", ["sasrec", "sasrec_muonrec", "sasrec_dp", "a2gen", "gems"])
def test_two_processes_equal_one_at_the_same_global_batch(kind, prepared_kuairand, prepared_tmall,
                                                          prepared_lifelong, tmp_path):
    """Tables sharded across 2 ranks (row-wise, table-wise) train like the 1-rank run: the lookups' all-to-all
    and torchrec's gradient division make each sharded row's update the one of the whole global batch."""
    data = str({"a2gen": prepared_tmall, "gems": prepared_lifelong}.get(kind, prepared_kuairand))
    two = _run(2, kind, data, str(tmp_path / "two.pt"))
    one = _run(1, kind, data, str(tmp_path / "one.pt"))
    # The same sums in another order: ~1e-7 apart, AdamW after 3 steps ~1e-6. MuonRec's Newton-Schulz runs
    # in bf16 (split across the ranks), where such differences can flip a rounding: up to ~5e-3 (as with DDP).
    _assert_same(two, one, atol=5e-3 if kind == "sasrec_muonrec" else 1e-5)
    initial = _initial_state(kind, data)
    for table in [k for k in one if ".embeddings." in k and k.endswith(".weight")]:
        assert not torch.equal(one[table], initial[table]), f"{table} did not train"


def _initial_state(kind: str, data: str) -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    model, _, _ = _setup(kind, data, 32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sharded_checkpoints_resume_across_world_sizes(prepared_kuairand, tmp_path):
    """One epoch on 2 ranks, saved (each rank its rows), resumed for a second epoch on 1 rank: the same
    weights as 2 epochs on 1 rank (the fused optimizer's per-row state resumes with them); and 1 -> 2."""
    data = str(prepared_kuairand)
    two_ckpt, one_ckpt = str(tmp_path / "two.ckpt"), str(tmp_path / "one.ckpt")
    _run(2, "sasrec", data, str(tmp_path / "a.pt"), epochs=1, ckpt_out=two_ckpt)
    files = sorted(p.name for p in (tmp_path / "two.ckpt").iterdir())
    assert files == ["meta.pt", "shards-00000-of-00002.safetensors", "shards-00001-of-00002.safetensors"]
    resumed = _run(1, "sasrec", data, str(tmp_path / "b.pt"), epochs=2, ckpt_in=two_ckpt)
    straight = _run(1, "sasrec", data, str(tmp_path / "c.pt"), epochs=2, ckpt_out=one_ckpt)
    _assert_same(resumed, straight, atol=1e-5)
    again = _run(2, "sasrec", data, str(tmp_path / "d.pt"), epochs=3, ckpt_in=one_ckpt)
    three = _run(1, "sasrec", data, str(tmp_path / "e.pt"), epochs=3)
    _assert_same(again, three, atol=1e-5)
    # A plain single-file checkpoint with whole tables, for export and single-process tools.
    sharded_checkpoint.consolidate(tmp_path / "two.ckpt", tmp_path / "plain.ckpt")
    plain = torch.load(tmp_path / "plain.ckpt", weights_only=True)
    table = plain["state_dict"]["model.items.embeddings.item.weight"]
    model = SASRecModule(num_items=table.shape[0], dim=16, num_layers=1, num_heads=2, max_len=20)
    model.load_state_dict(plain["state_dict"])
    assert plain[sharded_checkpoint.FUSED_KEY]["state"]["model.items.embeddings.item.weight"]["item.momentum1"].shape \
        == (table.shape[0],)


def test_tables_on_the_meta_device_materialize_only_as_shards(prepared_kuairand, tmp_path):
    """``embedding_device="meta"``: no rank builds the whole table; torchrec draws each shard's rows with
    the model's init (normal, std dim**-0.5) and training runs."""
    state = _run(2, "sasrec_meta", str(prepared_kuairand), str(tmp_path / "meta.pt"))
    table = state["model.items.embeddings.item.weight"]
    assert abs(float(table.std()) - 16**-0.5) < 0.1 * 16**-0.5  # torchrec's own default would give ~0.03
    assert torch.isfinite(table).all() and float(table.abs().min()) < 0.01 < float(table.abs().max())


def test_recsys_fit_with_the_torchrec_strategy_on_two_cpu_processes(prepared_kuairand, tmp_path, capsys):
    """The command line: `recsys fit ... --trainer.strategy torchrec --trainer.devices 2` writes sharded
    checkpoint folders; `recsys checkpoint consolidate` makes one plain file of them; `recsys plan` prints
    the plan of the same config without processes."""
    import subprocess
    import sys
    from pathlib import Path

    from recsys.cli import main

    config = Path(__file__).parents[2] / "configs" / "sasrec_kuairand.yaml"
    common = ["--config", str(config), "--data.init_args.data", str(prepared_kuairand), "--model.init_args.dim", "16"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "recsys.cli", "fit", *common, "--trainer.strategy", "torchrec",
                    "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
                    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                    "--trainer.enable_progress_bar", "false"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=300)
    last = tmp_path / "runs" / "sasrec_kuairand" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.iterdir()) == ["meta.pt", "shards-00000-of-00002.safetensors",
                                                      "shards-00001-of-00002.safetensors"]
    assert main(["checkpoint", "consolidate", "--checkpoint", str(last), "--out", str(tmp_path / "plain.ckpt")]) == 0
    plain = torch.load(tmp_path / "plain.ckpt", weights_only=True)
    assert plain["state_dict"]["model.items.embeddings.item.weight"].shape[1] == 16
    capsys.readouterr()
    assert main(["plan", "--train_config", str(config), "--world_size", "4", "--sharding", "{item: row_wise}",
                 "--overrides", f"[--data.init_args.data, {prepared_kuairand}]"]) == 0
    printed = capsys.readouterr().out
    assert "item  row_wise  fused  rank 0: rows 0-" in printed and "rank 3: rows" in printed


def test_a_relaxed_memory_trains_sharded_like_on_one_rank(prepared_kuairand, tmp_path):
    """A distilled memory with relaxed fields (DIET's soft one-hot option): the distributions' lookups go
    through the sharded collection like any id, and 2 ranks train A2Gen as 1 does."""
    from recsys.distill.memory import Memory, write_memory_dataset
    from recsys.distill.stream import ChainStream

    stream = ChainStream(str(prepared_kuairand))
    fields = stream.relaxable(32)
    positions = np.arange(0, stream.size, max(1, stream.size // 256))[:256]
    index = torch.as_tensor(positions)
    x = stream.inputs()
    memory = Memory.from_samples(positions, x.labels[index], peak=0.6,
                                 fields={f.key: (x.ids[index, f.column] - f.offset, f.size) for f in fields})
    data = str(write_memory_dataset(stream, memory, tmp_path / "memory", {"method": "hand", "budget": 0.01}))
    two = _run(2, "a2gen", data, str(tmp_path / "two.pt"))
    one = _run(1, "a2gen", data, str(tmp_path / "one.pt"))
    _assert_same(two, one, atol=1e-5)
    initial = _initial_state("a2gen", data)
    relaxed = [k for k in one if ".embeddings.tab." in k]
    assert relaxed and all(not torch.equal(one[k], initial[k]) for k in relaxed)
