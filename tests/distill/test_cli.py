"""``recsys distill``: bad input exits non-zero with a clear message and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.cli import main
from recsys.data.prepare import PrepareOptions, make_source, prepare


@pytest.mark.parametrize("budget", ["0", "1", "1.5", "-0.01"])
def test_budget_outside_0_1_is_refused(prepared_tmall: Path, tmp_path: Path, budget: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem"
    assert main(["distill", "diet", "--data", str(prepared_tmall), "--out", str(out), "--budget", budget]) == 1
    assert "budget must be a fraction in (0, 1)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["distill", "baseline", "--method", "random", "--data", str(prepared_tmall), "--out", str(out),
                 "--budget", budget]) == 1
    assert not out.exists()


def test_unknown_main_label_is_refused(prepared_tmall: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "diet", "--data", str(prepared_tmall), "--out", str(tmp_path / "m"),
                 "--main_label", "like"]) == 1
    assert "main label 'like' is not a chain action" in capsys.readouterr().err


def test_stream_with_missing_days_is_refused(raw_tmall: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Drop every log row of two training days: blocks would be empty, so DIET stops and names the days."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in raw_tmall.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    log = pl.read_csv(raw / "user_log_format1.csv", infer_schema_length=0)
    log.filter(~pl.col("time_stamp").is_in(["0601", "601", "0602", "602"])).write_csv(raw / "user_log_format1.csv")
    prepared = tmp_path / "prepared"
    prepare(make_source("tmall", raw), prepared, PrepareOptions(), log=lambda m: None)
    out = tmp_path / "mem"
    assert main(["distill", "diet", "--data", str(prepared), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 missing day(s)" in err and "2014-06-01" in err and str(prepared) in err
    assert not out.exists()


def test_baseline_command_writes_a_memory(prepared_tmall: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem"
    assert main(["distill", "baseline", "--method", "kcenter", "--data", str(prepared_tmall), "--out", str(out),
                 "--budget", "0.02"]) == 0
    assert "slots (kcenter, 2.00%" in capsys.readouterr().out
    assert (out / "memory.parquet").is_file() and (out / "manifest.json").is_file()


def test_diet_command_reports_each_stage_and_writes_a_memory(prepared_tmall: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem"
    assert main(["distill", "diet", "--data", str(prepared_tmall), "--out", str(out), "--budget", "0.03",
                 "--block_days", "28", "--outer_steps", "1", "--inner_steps", "5", "--unroll", "2",
                 "--relax_vocab", "4"]) == 0
    printed = capsys.readouterr().out
    assert "stage 0 (" in printed and "stage 2 (" in printed and "outer loss" in printed
    assert "relaxed fields ['gender']" in printed  # the soft one-hot option: Tmall's only field of <= 4 ids
    assert (out / "memory.parquet").is_file() and not (tmp_path / ".mem.diet-work").exists()
