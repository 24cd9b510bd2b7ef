"""``recsys bench-optim`` on a tiny prepared dataset: every output is written and consistent."""

from __future__ import annotations

import csv

from recsys.cli import main


def test_bench_optim_writes_runs_curves_plot_and_summary(prepared_kuairand, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench-optim", "--data", str(prepared_kuairand), "--out", str(out), "--seeds", "[0, 1]",
                 "--adamw_lrs", "[0.003]", "--muon_lrs", "[0.02]", "--max_epochs", "2", "--patience", "2",
                 "--evals_per_epoch", "2"])
    assert code == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    # sweep: adamw + muonrec on seed 0; finals add adamw and muonrec seed 1, torch-muon seeds 0 and 1
    assert [(r["phase"], r["optimizer"], r["seed"]) for r in rows] == [
        ("sweep", "adamw", "0"), ("sweep", "muonrec", "0"), ("final", "adamw", "1"), ("final", "muonrec", "1"),
        ("final", "torch-muon", "0"), ("final", "torch-muon", "1")]
    for r in rows:
        assert 0 < int(r["steps_to_best"]) <= int(r["steps_run"]) and float(r["ms_per_step"]) > 0
        assert 0 <= float(r["test_ndcg@10"]) <= float(r["test_hr@10"]) <= 1
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert len(curves) >= len(rows) and (out / "curves.png").stat().st_size > 5_000
    text = capsys.readouterr().out
    assert "## Chosen rates" in text and "MuonRec" in text and (out / "summary.md").read_text() in text
    # torch-muon is the same algorithm as MuonRec: close results on the same seed
    by = {(r["optimizer"], r["seed"]): float(r["val_ndcg@10"]) for r in rows}
    assert abs(by[("muonrec", "0")] - by[("torch-muon", "0")]) < 0.05


def test_bench_optim_accepts_a2gen(prepared_kuairand, tmp_path, capsys):
    out = tmp_path / "bench-a2gen"
    code = main(["bench-optim", "--model", "a2gen", "--data", str(prepared_kuairand), "--out", str(out),
                 "--seeds", "[0]", "--adamw_lrs", "[0.003]", "--muon_lrs", "[0.005]", "--optimizers",
                 "[adamw, muonrec]", "--max_epochs", "1", "--patience", "2", "--evals_per_epoch", "2"])
    assert code == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["optimizer"], r["seed"]) for r in rows] == [("adamw", "0"), ("muonrec", "0")]
    assert all(0 <= float(r["test_auc_mean"]) <= 1 for r in rows)
    assert "best val auc_mean" in capsys.readouterr().out


def test_bench_optim_sasrec_head_puts_the_head_on_muon(prepared_kuairand, tmp_path, capsys):
    from recsys.optim.bench import MODELS
    from recsys.optim.param_groups import build_param_groups

    spec = MODELS["sasrec-head"]()
    dm = spec.data(prepared_kuairand, 0, 1)
    dm.setup()
    module = spec.module(dm)
    muon = {n for g in build_param_groups(module.model, "muonrec") if g["use_muon"] for n in g["param_names"]}
    assert "head.weight" in muon
    out = tmp_path / "bench-head"
    code = main(["bench-optim", "--model", "sasrec-head", "--data", str(prepared_kuairand), "--out", str(out),
                 "--seeds", "[0]", "--adamw_lrs", "[0.003]", "--muon_lrs", "[0.02]", "--optimizers",
                 "[adamw, muonrec]", "--max_epochs", "1", "--patience", "2", "--evals_per_epoch", "2"])
    assert code == 0
    assert "sasrec-head" in (out / "summary.md").read_text()


def test_bench_models_take_the_evaluation_targets_per_user(prepared_kuairand):
    """``eval_per_user`` reaches the retrieval data: more targets, a less noisy early-stopping metric."""
    from recsys.optim.bench import MODELS

    spec = MODELS["sasrec"]()
    one, every = spec.data(prepared_kuairand, 0, 1), spec.data(prepared_kuairand, 0, None)
    one.setup()
    every.setup()
    assert len(every.samples("valid")) > len(one.samples("valid"))
