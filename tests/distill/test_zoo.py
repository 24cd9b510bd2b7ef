"""The zoo: shipped zoo files load, bad entries are refused, rankings compare, memories train every model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recsys.cli import main
from recsys.data.errors import DataError
from recsys.distill.baselines import select
from recsys.distill.memory import memory_coverage, write_memory_dataset
from recsys.distill.stream import ChainStream
from recsys.distill.zoo import (ZooEntry, compare, format_comparison, load_zoo, pair_agreement, ranking_agreement,
                                registered_models, resolved_pair_agreement, scaled_learning_rates, train_entry)

ROOT = Path(__file__).resolve().parents[2]
ZOOS = sorted((ROOT / "configs" / "distill").glob("zoo_*.yaml"))


@pytest.mark.parametrize("path", ZOOS, ids=lambda p: p.name)
def test_shipped_zoos_have_8_configs_over_4_models(path: Path) -> None:
    entries = load_zoo(path)
    assert len(entries) >= 8 and len({e.model for e in entries}) >= 4
    for e in entries:
        assert e.model in registered_models()


def test_zoo_entry_naming_no_registered_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zoo.yaml"
    path.write_text("entries:\n  - {name: a, model: DIN}\n  - {name: b, model: Transformer9000}\n")
    with pytest.raises(DataError, match=r"entry 1 \(b\): model 'Transformer9000' is not registered"):
        load_zoo(path)


def test_ranking_agreement() -> None:
    assert ranking_agreement([0.6, 0.7, 0.8], [0.5, 0.55, 0.9]) == {"tau": 1.0, "rho": pytest.approx(1.0, abs=1e-5), "top1": 1.0}
    r = ranking_agreement([0.6, 0.7, 0.8, 0.9], [0.6, 0.8, 0.7, 0.5])
    assert r["tau"] == pytest.approx(-1 / 3) and r["top1"] == 0.0  # 2 concordant, 4 discordant pairs


def test_pair_agreement_splits_pairs_across_and_within_models() -> None:
    models = ["DIN", "DIN", "PLE", "PLE"]
    r = pair_agreement([0.80, 0.82, 0.78, 0.79], [0.81, 0.80, 0.76, 0.77], models)
    assert r == {"across": 1.0, "within": 0.5, "across_pairs": 4.0, "within_pairs": 2.0}
    # the memory that swaps the architectures but keeps each model's sizes in order
    assert pair_agreement([0.80, 0.82, 0.78, 0.79], [0.70, 0.72, 0.80, 0.81], models)["across"] == 0.0
    # a pair full data ties is left out; a memory's tie counts against it
    r = pair_agreement([0.80, 0.80, 0.78], [0.81, 0.78, 0.78], ["DIN", "DIN", "PLE"])
    assert r["within_pairs"] == 0.0 and math.isnan(r["within"]) and r["across"] == 0.5
    with pytest.raises(ValueError, match="3 full scores, 3 others, 2 models"):
        pair_agreement([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], ["DIN", "PLE"])


def test_resolved_pair_agreement_counts_only_the_pairs_every_full_data_run_orders_alike() -> None:
    runs = [[0.80, 0.82, 0.70], [0.81, 0.80, 0.71]]  # (0, 1) flips between the runs; (0, 2) and (1, 2) do not
    assert resolved_pair_agreement(runs, [0.75, 0.74, 0.76]) == {"resolved": 0.0, "resolved_tau": -1.0,
                                                                 "resolved_pairs": 2.0}
    # the unresolved pair does not count whichever way the memory orders it
    for other in ([0.75, 0.74, 0.70], [0.74, 0.75, 0.70]):
        assert resolved_pair_agreement(runs, other) == {"resolved": 1.0, "resolved_tau": 1.0, "resolved_pairs": 2.0}
    # a tie in one run leaves the pair unresolved; a tie in the memory counts against it
    r = resolved_pair_agreement([[0.8, 0.7, 0.6], [0.8, 0.8, 0.6], [0.9, 0.7, 0.6]], [0.7, 0.6, 0.6])
    assert r == {"resolved": 0.5, "resolved_tau": 0.0, "resolved_pairs": 2.0}
    r = resolved_pair_agreement([[0.8, 0.7], [0.7, 0.8]], [0.8, 0.7])
    assert r["resolved_pairs"] == 0.0 and math.isnan(r["resolved"]) and math.isnan(r["resolved_tau"])
    with pytest.raises(ValueError, match="at least two full-data runs, got 1"):
        resolved_pair_agreement([[0.8, 0.7]], [0.8, 0.7])
    with pytest.raises(ValueError, match=r"runs of \[2, 3\] scores, 2 others"):
        resolved_pair_agreement([[0.8, 0.7], [0.8, 0.7, 0.6]], [0.8, 0.7])


def test_scaled_learning_rates_scale_the_entrys_rates_or_the_models_defaults() -> None:
    set_both = ZooEntry("din", "DIN", {"dim": 8, "lr": 0.003, "muon_lr": 0.005})
    assert scaled_learning_rates(set_both, 4.0) == {"dim": 8, "lr": 0.012, "muon_lr": 0.02}
    assert scaled_learning_rates(set_both, 1.0) == set_both.init_args
    assert scaled_learning_rates(ZooEntry("ple", "PLE", {"lr": 0.003}), 2.0) == {"lr": 0.006, "muon_lr": 0.04}


@pytest.fixture(scope="module")
def random_memory(prepared_tmall: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stream = ChainStream(str(prepared_tmall), block_days=28)
    out = tmp_path_factory.mktemp("mem") / "random"
    write_memory_dataset(stream, select(stream, "random", 0.1), out, {"method": "random", "budget": 0.1,
                                                                       "main_label": "purchase"})
    return out


def test_compare_trains_each_model_on_full_data_and_memory(prepared_tmall: Path, random_memory: Path,
                                                           tmp_path: Path) -> None:
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("recipe: {lr: 0.003}\nentries:\n"
                   "  - {name: din, model: DIN, init_args: {dim: 8}}\n"
                   "  - {name: mmoe, model: MMoE, init_args: {dim: 8}}\n"
                   "  - {name: a2gen, model: A2Gen, init_args: {dim: 8, heads: 2}}\n")
    result = compare(prepared_tmall, [random_memory], load_zoo(zoo), full_epochs=1, memory_epochs=1, log=lambda s: None)
    mem = result["memories"][str(random_memory)]
    assert set(mem["entries"]) == {"din", "mmoe", "a2gen"}
    assert -1.0 <= mem["tau"] <= 1.0
    assert mem["samples_ratio"] == pytest.approx(10.0, rel=0.02)  # 10% memory, one epoch each
    assert mem["coverage"] == memory_coverage(random_memory)
    assert 0 < mem["coverage"]["items"] < 1
    table = format_comparison(result)
    assert "| din |" in table and f"| test items covered |  | {mem['coverage']['items']:.1%} |" in table
    assert mem["across_pairs"] == 3 and mem["within_pairs"] == 0  # three models, one configuration each
    assert f"| pairs as full, across models |  | {mem['across']:.3f} |" in table
    assert "| pairs as full, within a model |  | - |" in table
    assert "full_self_agreement" not in result  # one seed: no yardstick


def test_train_entry_stops_after_max_steps(prepared_tmall: Path) -> None:
    """``max_steps`` ends a run early (full data for a memory's number of steps); its cost counts those steps."""
    entry = ZooEntry("din", "DIN", {"dim": 8})
    short = train_entry(entry, prepared_tmall, epochs=2, batch_size=64, seed=0, main_label="purchase", max_steps=3)
    assert short["train_samples"] == 3 * 64
    whole = train_entry(entry, prepared_tmall, epochs=1, batch_size=64, seed=0, main_label="purchase")
    assert whole["train_samples"] > 3 * 64 and whole["auc"] != short["auc"]


def test_compare_averages_both_sides_over_training_seeds(prepared_tmall: Path, random_memory: Path,
                                                          tmp_path: Path) -> None:
    """With two seeds every configuration trains twice on each side; the ranking compares the mean AUCs, and full
    data's two runs are ranked against each other (the yardstick)."""
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("recipe: {lr: 0.003}\nentries:\n"
                   "  - {name: mmoe, model: MMoE, init_args: {dim: 8}}\n"
                   "  - {name: deepfm, model: DeepFM, init_args: {dim: 8}}\n")
    result = compare(prepared_tmall, [random_memory], load_zoo(zoo), full_epochs=1, memory_epochs=1, seeds=(0, 1),
                     log=lambda s: None)
    runs = result["full_runs"]
    assert set(runs) == {"0", "1"}
    assert runs["0"]["mmoe"]["auc"] != runs["1"]["mmoe"]["auc"]  # the seed reaches the training
    for name in ("mmoe", "deepfm"):
        assert result["full"][name]["auc"] == pytest.approx((runs["0"][name]["auc"] + runs["1"][name]["auc"]) / 2)
    mem = result["memories"][str(random_memory)]
    assert mem["entries"]["mmoe"]["auc"] == pytest.approx(sum(r["mmoe"]["auc"] for r in mem["runs"].values()) / 2)
    one_pair = ranking_agreement([runs["0"][n]["auc"] for n in ("mmoe", "deepfm")],
                                 [runs["1"][n]["auc"] for n in ("mmoe", "deepfm")])["tau"]
    assert result["full_self_agreement"] == {"pairs": 1, "tau_mean": one_pair, "tau_min": one_pair,
                                             "tau_max": one_pair}
    assert "Full data against itself" in format_comparison(result)
    full_order = [runs[s]["mmoe"]["auc"] > runs[s]["deepfm"]["auc"] for s in ("0", "1")]
    assert mem["resolved_pairs"] == float(full_order[0] == full_order[1])
    if mem["resolved_pairs"]:
        assert mem["resolved"] == float((mem["entries"]["mmoe"]["auc"] > mem["entries"]["deepfm"]["auc"]) == full_order[0])
    assert "pairs as full, of the" in format_comparison(result)
    with pytest.raises(ValueError, match="at least one training seed"):
        compare(prepared_tmall, [], load_zoo(zoo), seeds=())


def test_memory_of_another_dataset_is_refused(prepared_kuairand: Path, random_memory: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    zoo = ZOOS[0]
    code = main(["distill", "compare", "--data", str(prepared_kuairand), "--memories", f"[{random_memory}]",
                 "--zoo", str(zoo), "--seeds", "[0, 1]"])
    assert code == 1  # the seeds parse; the memory is refused before any training
    assert "built on another dataset" in capsys.readouterr().err


def test_the_cli_and_compare_default_to_the_toolkit_memory_recipe():
    """``recsys distill compare`` writes its defaults as literals (its CLI is built from the signature without
    importing Lightning); they must stay the recipe BENCHMARKS.md measures (6 x 512, learning rates x2)."""
    import inspect

    from recsys.cli import distill_compare
    from recsys.distill.zoo import MEMORY_BATCH_SIZE, MEMORY_LR_SCALE

    for fn in (distill_compare, compare):
        params = inspect.signature(fn).parameters
        defaults = (params["memory_batch_size"].default, params["memory_lr_scale"].default)
        assert defaults == (MEMORY_BATCH_SIZE, MEMORY_LR_SCALE)


def test_memory_prior_init_reaches_the_runs_on_memories_only(prepared_tmall: Path, random_memory: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``memory_prior_init`` every run on a memory of a model that has per-action logits starts them at the
    memory's label rates; full-data runs and A2Gen (a softmax over action tokens) start as they do."""
    import torch

    from recsys.data.chain_ranking import ChainDataModule
    from recsys.models.mmoe import ChainHeadsModule

    started, original = [], ChainHeadsModule.init_action_prior

    def spy(self: ChainHeadsModule, rates: torch.Tensor) -> None:
        started.append((type(self).__name__, rates.clone()))
        original(self, rates)

    monkeypatch.setattr(ChainHeadsModule, "init_action_prior", spy)
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("entries:\n  - {name: mmoe, model: MMoE, init_args: {dim: 8}}\n"
                   "  - {name: a2gen, model: A2Gen, init_args: {dim: 8, heads: 2}}\n")
    compare(prepared_tmall, [random_memory], load_zoo(zoo), full_epochs=1, memory_epochs=1, seeds=(0, 1),
            log=lambda s: None)
    assert started == []  # off by default
    compare(prepared_tmall, [random_memory], load_zoo(zoo), full_epochs=1, memory_epochs=1, seeds=(0, 1),
            memory_prior_init=True, log=lambda s: None)
    assert [name for name, _ in started] == ["MMoE", "MMoE"]  # one run on the memory per seed, none on full data
    expected = ChainDataModule(random_memory).label_rates()
    assert all(torch.equal(rates, expected) for _, rates in started)
