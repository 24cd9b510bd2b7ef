"""Bad input: every case gets a DataError naming the file, line and column and what was expected, the CLI
exits non-zero, and no output (not even a temporary folder) is left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.data.errors import DataError
from recsys.data.prepare import make_source, prepare

LOG_HEADER = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type"
GOOD_ROWS = ["1,10,3,7,5,829,0", "1,11,3,7,,0830,2", "2,10,3,7,NULL,1111,3", "2,12,4,8,6,1111,1"]


def tmall_folder(root: Path, rows: list[str] | None = None, header: str = LOG_HEADER, info: str | None = None) -> Path:
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    lines = [header, *(GOOD_ROWS if rows is None else rows)]
    (raw / "user_log_format1.csv").write_text("\n".join(lines) + "\n")
    (raw / "user_info_format1.csv").write_text(info if info is not None else "user_id,age_range,gender\n1,3,0\n2,,2\n")
    return raw


def prepare_error(raw: Path, out: Path, dataset: str = "tmall") -> DataError:
    with pytest.raises(DataError) as info:
        prepare(make_source(dataset, raw), out, log=lambda m: None)
    assert not out.exists(), "no output may be left behind"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")], "temporary folder left"
    return info.value


def test_good_tmall_input_prepares(tmp_path):
    # the baseline the cases below break: 829 and 0830, empty and NULL brands all parse
    manifest = prepare(make_source("tmall", tmall_folder(tmp_path)), tmp_path / "out", log=lambda m: None)
    assert manifest.rows["read"] == 4 and manifest.rows["events"] == 4


@pytest.mark.parametrize(
    ("rows", "header", "line", "column", "words"),
    [
        (["1,abc,3,7,5,829,0"], LOG_HEADER, 2, "item_id", "expected an integer, got 'abc'"),
        (["1,10,3,7,5,829,0", "1,10,3,7,5,829"], LOG_HEADER, 3, None, "expected 7 fields, got 6"),
        (["1,10,3,7,5,829,0", "1,10,3,7,5,829,0,9"], LOG_HEADER, 3, None, "expected 7 fields, got 8"),
        (["1,10,3.5,7,5,829,0"], LOG_HEADER, 2, "cat_id", "expected an integer, got '3.5'"),
        (GOOD_ROWS + ["3,10,3,7,5,231,0"], LOG_HEADER, 6, "time_stamp", "month-day"),  # Feb 31st
        (GOOD_ROWS + ["3,10,3,7,5,1345,0"], LOG_HEADER, 6, "time_stamp", "month-day"),
        (["1,10,3,7,5,829,7"], LOG_HEADER, 2, "action_type", "an action_type in 0..3"),
        (["1,10,3,7,5,829,0", "-4,10,3,7,5,829,0"], LOG_HEADER, 3, "user_id", "an integer in 0..4294967295, got '-4'"),
        (["1,,3,7,5,829,0"], LOG_HEADER, 2, "item_id", "a missing value"),
    ],
)
def test_malformed_rows_and_values_name_line_and_column(tmp_path, rows, header, line, column, words):
    err = prepare_error(tmall_folder(tmp_path, rows, header), tmp_path / "out")
    assert Path(err.path).name == "user_log_format1.csv"
    assert err.line == line
    assert err.column == column
    assert words in str(err)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("user_id,item_id,cat_id,seller_id,time_stamp,action_type", "missing column(s) 'brand_id'"),
        (LOG_HEADER + ",extra", "unexpected column(s) 'extra'"),
        (LOG_HEADER.replace("seller_id", "merchant_id"), "'merchant_id' where 'seller_id' was expected"),
        ("item_id,user_id,cat_id,seller_id,brand_id,time_stamp,action_type", "'item_id' where 'user_id'"),
    ],
)
def test_header_problems_name_the_columns(tmp_path, header, words):
    err = prepare_error(tmall_folder(tmp_path, header=header), tmp_path / "out")
    assert err.line == 1 and words in str(err) and LOG_HEADER in str(err)


def test_empty_file_and_header_only(tmp_path):
    raw = tmall_folder(tmp_path)
    (raw / "user_log_format1.csv").write_text("")
    assert "file is empty" in str(prepare_error(raw, tmp_path / "out"))
    (raw / "user_log_format1.csv").write_text(LOG_HEADER + "\n")
    assert "no data rows" in str(prepare_error(raw, tmp_path / "out"))


def test_missing_folder_and_files(tmp_path):
    err = prepare_error(tmp_path / "nowhere", tmp_path / "out")
    assert "folder not found" in str(err)
    raw = tmall_folder(tmp_path)
    (raw / "user_info_format1.csv").unlink()
    err = prepare_error(raw, tmp_path / "out")
    assert Path(err.path).name == "user_info_format1.csv" and "file not found" in str(err)


def test_bad_user_info_value(tmp_path):
    raw = tmall_folder(tmp_path, info="user_id,age_range,gender\n1,3,0\n2,12,1\n")
    err = prepare_error(raw, tmp_path / "out")
    assert (Path(err.path).name, err.line, err.column) == ("user_info_format1.csv", 3, "age_range")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'movielens'.*tmall"):
        make_source("movielens", Path("."))


# --- KuaiRand: the same machinery over the 19-column logs ------------------------------------------------


def _break_kuairand(raw: Path, tmp: Path, column: str, value: str, data_line: int = 5) -> tuple[Path, str]:
    copy = tmp / "raw"
    shutil.copytree(raw, copy)
    path = copy / "log_standard_4_08_to_4_21_pure.csv"
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    fields = lines[data_line].split(",")
    fields[header.index(column)] = value
    lines[data_line] = ",".join(fields)
    path.write_text("\n".join(lines))
    return copy, path.name


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("hourmin", "2350", "a whole hour HH00"),
        ("date", "20221301", "a calendar date"),
        ("time_ms", "-5", "epoch milliseconds"),
        ("is_click", "2", "0 or 1"),
        ("video_id", "x7", "expected an integer, got 'x7'"),
    ],
)
def test_kuairand_impossible_values(raw_kuairand, tmp_path, column, value, words):
    raw, name = _break_kuairand(raw_kuairand, tmp_path, column, value)
    err = prepare_error(raw, tmp_path / "out", dataset="kuairand-pure")
    assert (Path(err.path).name, err.line, err.column) == (name, 6, column)
    assert words in str(err)


def test_kuairand_missing_release_file(raw_kuairand, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_kuairand, raw)
    (raw / "log_random_4_22_to_5_08_pure.csv").unlink()
    err = prepare_error(raw, tmp_path / "out", dataset="kuairand-pure")
    assert "log_random_4_22_to_5_08_pure.csv" in str(err)


def test_kuairand_bad_value_in_bucketed_streaming_path(raw_kuairand, tmp_path):
    raw, name = _break_kuairand(raw_kuairand, tmp_path, "tab", "-1", data_line=3000)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        from recsys.data.prepare import PrepareOptions

        prepare(make_source("kuairand-pure", raw), out, PrepareOptions(rows_per_bucket=2000), log=lambda m: None)
    assert (Path(info.value.path).name, info.value.line, info.value.column) == (name, 3001, "tab")
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_failed_prepare_keeps_previous_output(tmp_path):
    raw = tmall_folder(tmp_path)
    out = tmp_path / "out"
    prepare(make_source("tmall", raw), out, log=lambda m: None)
    before = (out / "manifest.json").read_bytes()
    (raw / "user_log_format1.csv").write_text(LOG_HEADER + "\n1,10,3,7,5,1345,0\n")
    with pytest.raises(DataError):
        prepare(make_source("tmall", raw), out, log=lambda m: None)
    assert (out / "manifest.json").read_bytes() == before


def test_cli_exit_status_and_message(tmp_path):
    raw = tmall_folder(tmp_path, ["1,10,3,7,5,829,0", "1,10,3,7,5,829"])
    cmd = [sys.executable, "-m", "recsys.cli", "data", "prepare", "--dataset", "tmall", "--raw", str(raw),
           "--out", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "user_log_format1.csv:3: expected 7 fields, got 6" in result.stderr
    assert not (tmp_path / "out").exists()
    bad_name = subprocess.run([*cmd[:5], "movielens", *cmd[6:]], capture_output=True, text=True, timeout=120)
    assert bad_name.returncode == 2 and "movielens" in bad_name.stderr
