"""The ``recsys`` command: synth -> prepare through the CLI, exit statuses, and the quickstart."""

from __future__ import annotations

import pytest

from recsys.cli import main
from recsys.data.prepared import PreparedDataset


def test_synth_then_prepare(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["data", "synth", "--dataset", "tmall", "--out", str(raw), "--users", "60", "--items", "90"]) == 0
    assert (raw / "user_log_format1.csv").exists()
    assert main(["data", "synth", "--dataset", "tmall", "--out", str(raw)]) == 1  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["data", "prepare", "--dataset", "tmall", "--raw", str(raw), "--out", str(out), "--kcore", "2"]) == 0
    assert PreparedDataset(out).manifest.config["kcore"] == 2


def test_help_lists_typed_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--dataset" in text and "kuairand-27k" in text and "--kcore" in text


def test_quickstart_small(tmp_path, capsys):
    main(["quickstart", "--out", str(tmp_path), "--users", "150", "--items", "200", "--epochs", "1"])
    text = capsys.readouterr().out
    assert "| A2Gen" in text and "| PLE" in text and "auc/like" in text and "mae/leave" in text
    assert (tmp_path / "prepared-kuairand-pure-u150-i200-s0" / "manifest.json").exists()


@pytest.mark.slow
def test_quickstart_default_learns(tmp_path):
    from recsys.quickstart import run

    rows = run(out=tmp_path)
    for model in ("A2Gen", "PLE"):
        assert rows[model]["auc/like"] > 0.6  # the planted engagement style is learnable
        assert rows[model]["mae/leave"] < 0.5
