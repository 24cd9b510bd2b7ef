"""Every shipped config builds its model and data through `recsys fit` and runs a fast dev run; `fit`
writes best and last checkpoints and logs, and resumes from `last`."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.cli import main

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"a2gen_tmall", "a2gen_kuairand", "mmoe_tmall", "ple_tmall", "din_tmall", "deepfm_tmall", "sasrec_kuairand",
            "gems_kuairand1k", "gems_kuairand27k"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_runs(config, request, tmp_path, monkeypatch):
    fixture = "prepared_tmall" if "tmall" in config.stem else "prepared_lifelong" if "gems" in config.stem else "prepared_kuairand"
    data = request.getfixturevalue(fixture)
    monkeypatch.chdir(tmp_path)  # logs and checkpoints land in the test's folder
    code = main(["fit", "--config", str(config), "--data.init_args.data", str(data),
                 "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar", "false"])
    assert code == 0


def test_fit_checkpoints_logs_and_resume(prepared_tmall, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).parent.parent / "configs" / "ple_tmall.yaml"
    common = ["--config", str(config), "--data.init_args.data", str(prepared_tmall),
              "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
              "--trainer.val_check_interval", "1.0", "--trainer.enable_progress_bar", "false"]
    main(["fit", *common, "--trainer.max_epochs", "1"])
    run = tmp_path / "runs" / "ple_tmall"
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    assert list(run.rglob("metrics.csv")) and list(run.rglob("events.out.tfevents.*"))
    main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    import torch

    last = torch.load(next(run.rglob("last.ckpt")), weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 6  # resumed after epoch 0, one more epoch
