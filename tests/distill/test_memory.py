"""What a memory covers of the test split (:func:`recsys.distill.memory.memory_coverage`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.errors import DataError
from recsys.distill.memory import Memory, memory_coverage, write_memory_dataset
from recsys.distill.stream import ChainStream


def test_coverage_of_a_memory_holding_one_items_chains(prepared_kuairand: Path, tmp_path: Path) -> None:
    """A memory of every training chain of the most frequent item (and its users) covers exactly the test
    chains of that item, and of those users."""
    stream = ChainStream(str(prepared_kuairand))
    chains = stream.tables.chains
    user, item = np.asarray(chains.user), np.asarray(chains.item)
    top = np.bincount(item[stream.rows]).argmax()
    positions = np.flatnonzero(item[stream.rows] == top)
    assert len(positions) >= 5
    memory = Memory.from_samples(positions, stream.inputs().labels[torch.as_tensor(positions)])
    out = write_memory_dataset(stream, memory, tmp_path / "one-item", {"method": "hand", "budget": 0.01})
    test = np.flatnonzero(chains.split == 2)
    assert 0 < (item[test] == top).mean() < 1
    got = memory_coverage(out)
    assert got["items"] == pytest.approx((item[test] == top).mean())
    assert got["items_5"] == pytest.approx((item[test] == top).mean())
    assert got["users"] == pytest.approx(np.isin(user[test], user[stream.rows[positions]]).mean())
    assert got["users_full"] == pytest.approx(np.isin(user[test], user[stream.rows]).mean())
    assert got["items_full"] == pytest.approx(np.isin(item[test], item[stream.rows]).mean())
    assert got["items"] < got["items_full"]


def test_coverage_of_a_plain_dataset_is_refused(prepared_kuairand: Path) -> None:
    with pytest.raises(DataError, match="not a distilled memory"):
        memory_coverage(prepared_kuairand)


def test_relaxed_fields_round_trip_and_bad_columns_are_refused(prepared_kuairand: Path, tmp_path: Path) -> None:
    """A memory's relaxed fields (DIET's soft one-hot option) survive a stage file and memory.parquet; a
    relaxed column of the wrong size, or whose row is no distribution, is refused naming column and row."""
    import polars as pl

    from recsys.data.chain_ranking import ChainDataModule

    stream = ChainStream(str(prepared_kuairand))
    (tab,) = [f for f in stream.relaxable(32) if f.key == "tab"]
    positions = np.arange(0, 60, 3)
    ids = stream.inputs().ids[torch.as_tensor(positions), tab.column] - tab.offset
    memory = Memory.from_samples(positions, stream.inputs().labels[torch.as_tensor(positions)],
                                 fields={"tab": (ids, tab.size)}, peak=0.9)
    memory.field_logits["tab"][1] += torch.linspace(0, 1, tab.size)  # something learned
    memory.save(tmp_path / "stage.safetensors")
    loaded = Memory.load(tmp_path / "stage.safetensors")
    assert torch.equal(loaded.field_logits["tab"], memory.field_logits["tab"])
    probs = memory.field_probs["tab"]
    assert torch.allclose(probs[0, ids[0]], torch.tensor(0.9)) and torch.allclose(probs.sum(1), torch.ones(20))

    out = write_memory_dataset(stream, memory, tmp_path / "relaxed", {"method": "hand", "budget": 0.01})
    batch = ChainDataModule(out).samples("train").__getitems__(list(range(20)))  # slot order
    torch.testing.assert_close(batch.relaxed["tab"], probs, rtol=0, atol=1e-6)
    assert torch.equal(batch.features["tab"].values(), ids)  # the KJT keeps the slot's real id
    without_tab = ChainDataModule(out, context=["hour"]).samples("train").__getitems__([0, 1])
    assert without_tab.relaxed is None  # a relaxed field the features leave out is dropped

    frame = pl.read_parquet(out / "memory.parquet")
    bad = probs.numpy().copy()
    bad[7, 0] += 0.5
    frame.with_columns(pl.Series("relaxed_tab", bad)).write_parquet(out / "memory.parquet")
    with pytest.raises(DataError, match=r"'relaxed_tab', row 7: not a probability distribution"):
        ChainDataModule(out).samples("train")
    frame.with_columns(pl.Series("relaxed_tab", bad[:, :4])).write_parquet(out / "memory.parquet")
    with pytest.raises(DataError, match=rf"'relaxed_tab' is .*expected a list of {tab.size} probabilities"):
        ChainDataModule(out).samples("train")


def test_sparse_features_embed_a_distribution_as_its_expected_embedding() -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from recsys.models.features import SparseFeatures

    features = SparseFeatures({"item": 10, "tab": 3, "history": 10}, 4)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item", "tab", "history"], values=torch.tensor([4, 7, 2, 1, 5, 9, 2]),
                                              lengths=torch.tensor([1, 1, 1, 1, 3, 0]))
    probs = torch.tensor([[0.1, 0.0, 0.9], [0.0, 1.0, 0.0]])
    soft, hard = features(kjt, {"tab": probs}), features(kjt)
    table = features.collection.embeddings["tab"].weight
    torch.testing.assert_close(soft["tab"].values(), probs @ table[:3])
    torch.testing.assert_close(soft["tab"].values()[1], hard["tab"].values()[1])  # a one-hot is the id's row
    assert soft["tab"].lengths().tolist() == [1, 1]
    for key in ("item", "history"):
        torch.testing.assert_close(soft[key].values(), hard[key].values())


def test_a_memorys_label_rates_are_its_soft_labels_weighted_mean(prepared_tmall: Path, tmp_path: Path) -> None:
    """What the models' BCE is fitted to on a memory (``ChainDataModule.label_rates``)."""
    import polars as pl

    from recsys.data.chain_ranking import ChainDataModule
    from recsys.distill.baselines import select

    stream = ChainStream(str(prepared_tmall), block_days=28)
    memory = select(stream, "random", 0.1)
    memory.weight_logits = torch.linspace(-2.0, 2.0, memory.weight_logits.numel())  # uneven weights
    write_memory_dataset(stream, memory, tmp_path / "mem", {"method": "random", "budget": 0.1, "main_label": "purchase"})
    frame = pl.read_parquet(tmp_path / "mem" / "memory.parquet")
    w = torch.tensor(frame["weight"].to_numpy())
    soft = torch.tensor(frame.select([c for c in frame.columns if c.startswith("soft_")]).to_numpy())
    assert w.std() > 0.1
    rates = ChainDataModule(tmp_path / "mem").label_rates()
    assert torch.allclose(rates, (soft * w[:, None]).sum(0) / w.sum(), atol=1e-5)
