"""DIET on a small Tmall-format stream: budget, resume, meta-gradients, the memory as a prepared dataset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.distill import proxy
from recsys.distill.diet import DIETConfig, fresh_proxy, inner_loop, run_diet
from recsys.distill.memory import Memory
from recsys.distill.stream import ChainStream, ProxyInputs

CONFIG = DIETConfig(budget=0.05, block_days=28, inner_steps=6, unroll=3, outer_steps=2, outer_samples=512,
                    replay=256, val_size=256, replace_fraction=0.1)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def stream(prepared_tmall: Path) -> ChainStream:
    return ChainStream(str(prepared_tmall), block_days=CONFIG.block_days)


@pytest.fixture(scope="module")
def diet_memory(prepared_tmall: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("diet") / "memory"
    run_diet(prepared_tmall, out, CONFIG, log=_quiet)
    return out


def test_stream_blocks_cover_the_training_split_in_time_order(stream: ChainStream) -> None:
    chains = stream.tables.chains
    assert stream.size == int((chains.split == 0).sum()) and len(stream) >= 3
    starts = chains.start[stream.rows]
    assert (np.diff(starts) >= 0).all()
    assert sum(len(stream.block(b)) for b in range(len(stream))) == stream.size
    x = stream.inputs()
    assert len(x) == stream.size
    np.testing.assert_array_equal(x.labels.numpy(), chains.occurred[stream.rows, :3].astype(np.float32))


def test_memory_is_a_prepared_dataset_within_budget(diet_memory: Path, stream: ChainStream) -> None:
    m = stream.budget_slots(CONFIG.budget)
    frame = pl.read_parquet(diet_memory / "memory.parquet")
    assert len(frame) == m and frame["chain"].n_unique() == m
    assert frame["weight"].min() > 0 and abs(frame["weight"].mean() - 1) < 1e-4
    soft = frame["soft_purchase"].to_numpy()
    assert ((soft > 0) & (soft < 1)).all()
    assert len(list((diet_memory / "stages").glob("stage_*.safetensors"))) == len(stream)
    dm = ChainDataModule(diet_memory, batch_size=64)
    assert len(dm.samples("train")) == m
    assert len(dm.samples("test")) == len(ChainDataModule(stream.dataset.path).samples("test"))
    batch = next(iter(dm.train_dataloader()))
    assert batch.soft_labels.shape == (64, 3) and batch.weights.shape == (64,)
    # the memory keeps the main label's rate of the stream (stratified selection), within a few slots
    rate = float(stream.inputs().labels[:, stream.main].mean())
    hard = stream.tables.chains.occurred[frame["chain"].to_numpy(), stream.main].mean()
    assert abs(hard - rate) < 0.05


def _slots_per_block(memory: Path, stream: ChainStream) -> np.ndarray:
    block_of = np.empty(len(stream.tables.chains), dtype=np.int64)
    for b in range(len(stream)):
        block_of[stream.rows[stream.block(b)]] = b
    return np.bincount(block_of[pl.read_parquet(memory / "memory.parquet")["chain"].to_numpy()], minlength=len(stream))


def test_the_reservoir_schedule_keeps_the_streams_make_up_over_time(
        prepared_tmall: Path, diet_memory: Path, stream: ChainStream, tmp_path: Path) -> None:
    """Default schedule: every block holds its share of the memory (as a reservoir sample would, in
    expectation; the last block exactly ``m x`` its share of the stream); ``fixed`` (5% a block) leaves
    the memory mostly the first block's."""
    m = stream.budget_slots(CONFIG.budget)
    sizes = np.array([len(stream.block(b)) for b in range(len(stream))])
    share = sizes / sizes.sum()
    reservoir = _slots_per_block(diet_memory, stream)
    assert reservoir.sum() == m
    assert reservoir[-1] == round(m * share[-1])
    assert np.abs(reservoir / m - share).max() < 0.02  # measured: within 0.007 of every block's share
    fixed_out = tmp_path / "fixed"
    run_diet(prepared_tmall, fixed_out, replace(CONFIG, replace_schedule="fixed", replace_fraction=0.05), log=_quiet)
    fixed = _slots_per_block(fixed_out, stream)
    assert fixed[0] / m > share[0] + 0.3  # measured: 0.79 against a share of 0.24


def test_activity_strata_keep_the_streams_mix_of_heavy_and_light_users(
        prepared_tmall: Path, stream: ChainStream, tmp_path: Path) -> None:
    """With user-activity buckets the memory holds each bucket's share of the stream (and the main label's
    rate), whatever influence prefers."""
    from recsys.distill.diet import strata

    out = tmp_path / "users"
    run_diet(prepared_tmall, out, replace(CONFIG, activity_strata=3), log=_quiet)
    chains = pl.read_parquet(out / "memory.parquet")["chain"].to_numpy()
    order = np.argsort(stream.rows)  # stream positions of the memory's chains
    positions = order[np.searchsorted(stream.rows[order], chains)]
    assert (stream.rows[positions] == chains).all()
    whole = strata(stream, np.arange(stream.size), stream.size, 3).numpy()
    kept = strata(stream, positions, stream.size, 3).numpy()
    stream_share = np.bincount(whole % 3, minlength=3) / len(whole)
    memory_share = np.bincount(kept % 3, minlength=3) / len(kept)
    print("activity buckets: stream", stream_share.round(3), "memory", memory_share.round(3))
    assert np.abs(memory_share - stream_share).max() < 0.05
    assert abs((kept // 3).mean() - (whole // 3).mean()) < 0.01  # the main label's rate too
    with pytest.raises(ValueError, match="activity_strata"):
        replace(CONFIG, activity_strata=0)

def test_user_cap_spreads_the_slots_over_more_users(prepared_tmall: Path, diet_memory: Path, tmp_path: Path) -> None:
    """Capped at its share of the stream (``user_cap`` 1), no user piles up slots: more users, a smaller
    largest user (measured here: 267 users, at most 4 slots each, against 184 and 8)."""
    out = tmp_path / "capped"
    run_diet(prepared_tmall, out, replace(CONFIG, user_cap=1.0), log=_quiet)
    capped = pl.read_parquet(out / "memory.parquet").group_by("user").len()["len"]
    free = pl.read_parquet(diet_memory / "memory.parquet").group_by("user").len()["len"]
    assert capped.sum() == free.sum()  # the budget is still filled
    assert capped.len() > free.len() + 40 and capped.max() < free.max()
    with pytest.raises(ValueError, match="user_cap"):
        replace(CONFIG, user_cap=-1.0)


def test_relaxed_fields_are_learned_written_and_embedded(prepared_tmall: Path, diet_memory: Path, tmp_path: Path) -> None:
    """The soft one-hot option: Tmall's small fields (``age_range`` 8 ids, ``gender`` 3) become per-slot
    distributions that the outer loss moves off their start, memory.parquet holds them, batches carry them
    and a model embeds them: changing one sample's distribution changes that sample's prediction only."""
    from recsys.models.din import DIN

    out = tmp_path / "relaxed"
    run_diet(prepared_tmall, out, replace(CONFIG, relax_vocab=16), log=_quiet)
    frame = pl.read_parquet(out / "memory.parquet")
    assert [c for c in frame.columns if c.startswith("relaxed_")] == ["relaxed_age_range", "relaxed_gender"]
    probs = frame["relaxed_age_range"].to_numpy()
    assert probs.shape == (len(frame), 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (np.abs(probs.max(1) - CONFIG.relax_peak) > 1e-3).mean() > 0.5  # learned, not left at the start
    dm = ChainDataModule(out, batch_size=16)
    batch = next(iter(dm.train_dataloader()))
    assert batch.relaxed["gender"].shape == (16, 3)
    model = DIN(dm.feature_cardinalities, dm.spec_dict, dim=8).eval()
    moved = replace(batch, relaxed={**batch.relaxed, "gender": batch.relaxed["gender"].clone()})
    moved.relaxed["gender"][3] = torch.tensor([0.2, 0.3, 0.5])  # every slot starts peaked at 0.95
    with torch.no_grad():
        before, after = model(batch)[0], model(moved)[0]
    changed = (before - after).abs().amax(1) > 1e-7
    assert changed.tolist() == [i == 3 for i in range(16)]
    assert not [c for c in pl.read_parquet(diet_memory / "memory.parquet").columns if c.startswith("relaxed_")]


def test_user_room_and_capped_selection() -> None:
    from recsys.distill.diet import user_room
    from recsys.distill.selection import capped, stratified_top

    room = user_room(np.array([0, 0, 0, 1]), np.array([0]), 4, 1.0, 2)
    np.testing.assert_array_equal(room, [3, 2])  # limits floor(4 x 3/4) + 1 = 4 and 2, less one held
    assert capped(torch.tensor([0, 1, 2, 3]), np.array([0, 0, 0, 1]), np.array([2, 1]), 3).tolist() == [0, 1, 3]
    room = np.array([1, 5])  # shared across strata: user 0's one slot goes to the first stratum's best
    picked = stratified_top(torch.tensor([5., 4., 3., 2.]), torch.tensor([0, 0, 1, 1]), 4, np.array([0, 1, 0, 1]), room)
    assert picked.tolist() == [0, 1, 3] and room.tolist() == [0, 3]


def test_killed_run_resumes_to_the_identical_memory(prepared_tmall: Path, diet_memory: Path, tmp_path: Path) -> None:
    out = tmp_path / "memory"
    assert run_diet(prepared_tmall, out, CONFIG, log=_quiet, stop_after=2) is None
    assert not out.exists()  # nothing half-written where the memory goes
    lines: list[str] = []
    run_diet(prepared_tmall, out, CONFIG, log=lines.append)
    assert "resuming at stage 2" in lines[0]
    assert pl.read_parquet(out / "memory.parquet").equals(pl.read_parquet(diet_memory / "memory.parquet"))


def _float64_setup(stream: ChainStream) -> tuple[ProxyInputs, ProxyInputs, proxy.Params]:
    """A 40-slot memory, an outer sample of 300 and a fresh proxy, in float64 (for finite differences)."""
    x = stream.inputs()
    mem_x, out_x = x.take(torch.arange(0, 40)), x.take(torch.arange(100, 400))
    init = {k: v.double() for k, v in fresh_proxy(stream, CONFIG, torch.Generator().manual_seed(1)).items()}
    mem_x.slots, out_x.slots = mem_x.slots.double(), out_x.slots.double()
    return mem_x, out_x, init


def _assert_central_differences(outer: Callable[[torch.Tensor], torch.Tensor], param: torch.Tensor,
                                entries: list[tuple[int, int]]) -> None:
    """``d outer / d param`` by autograd equals a central difference at ``entries``, and is not all zero."""
    (grad,) = torch.autograd.grad(outer(param), param)
    eps = 1e-5
    for i, k in entries:
        step = torch.zeros_like(param)
        step[i, k] = eps
        numeric = (outer(param.detach() + step) - outer(param.detach() - step)) / (2 * eps)
        assert float(grad[i, k]) == pytest.approx(float(numeric.detach()), rel=1e-4, abs=1e-9)
    assert grad.abs().sum() > 0


def test_meta_gradient_matches_finite_differences(stream: ChainStream) -> None:
    """d L_outer / d soft label through the unrolled inner loop, against a central difference."""
    torch.manual_seed(0)
    mem_x, out_x, init = _float64_setup(stream)
    u = torch.logit(mem_x.labels.double().clamp(0.1, 0.9)).requires_grad_(True)
    w = torch.ones(40, dtype=torch.float64)

    def outer(labels_logit: torch.Tensor) -> torch.Tensor:
        theta = inner_loop(init, mem_x, torch.sigmoid(labels_logit), w, steps=4, lr=1.0, unroll=4)
        return proxy.weighted_bce(theta, out_x, out_x.labels.double())

    _assert_central_differences(outer, u, [(0, 0), (3, 2), (17, 1)])


def test_meta_gradient_reaches_relaxed_fields(stream: ChainStream) -> None:
    """d L_outer / d relaxed-field logits (the soft one-hot option) through the proxy's expected embedding
    and the unrolled inner loop, against a central difference."""
    from recsys.distill.memory import peaked_logits
    from recsys.distill.stream import RelaxedField

    (field,) = stream.relaxable(4)  # Tmall's gender: 3 ids
    mem_x, out_x, init = _float64_setup(stream)
    z = peaked_logits(mem_x.ids[:, field.column] - field.offset, field.size, 0.8).double().requires_grad_(True)
    soft, w = mem_x.labels.double().clamp(0.1, 0.9), torch.ones(40, dtype=torch.float64)

    def outer(logits: torch.Tensor) -> torch.Tensor:
        relaxed = mem_x.with_relaxed({field.column: RelaxedField(field.offset, torch.softmax(logits, 1))})
        theta = inner_loop(init, relaxed, soft, w, steps=4, lr=1.0, unroll=4)
        return proxy.weighted_bce(theta, out_x, out_x.labels.double())

    _assert_central_differences(outer, z, [(0, 0), (5, 1), (21, 2)])
    with pytest.raises(ValueError, match="relax_vocab"):
        replace(CONFIG, relax_vocab=-1)
    with pytest.raises(ValueError, match="relax_peak"):
        replace(CONFIG, relax_peak=1.0)


def test_bi_level_steps_lower_the_outer_loss_of_a_fixed_proxy(stream: ChainStream) -> None:
    """A few meta-gradient steps on the soft labels and weights of a random memory lower the outer loss
    of the inner-trained proxy (same initialisation each step, so the change is the memory's)."""
    x = stream.inputs()
    gen = torch.Generator().manual_seed(0)
    positions = torch.randperm(stream.size, generator=gen)[:150]
    memory = Memory.from_samples(positions, x.labels[positions])
    mem_x, out_x = x.take(memory.positions), x.take(torch.randperm(stream.size, generator=gen)[:1000])
    init = fresh_proxy(stream, CONFIG, gen)
    u = memory.label_logits.clone().requires_grad_(True)
    v = memory.weight_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([u, v], lr=0.1)
    losses = []
    for _ in range(15):
        wts = torch.nn.functional.softplus(v)
        theta = inner_loop(init, mem_x, torch.sigmoid(u), wts / wts.mean(), steps=10, lr=1.0, unroll=10)
        loss = proxy.weighted_bce(theta, out_x, out_x.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.01


def test_config_rejects_bad_values() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="budget"):
            DIETConfig(budget=bad)
    with pytest.raises(ValueError, match="unroll"):
        DIETConfig(inner_steps=5, unroll=6)
