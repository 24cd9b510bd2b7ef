"""The Tianchi 2014 Rec Tmall log reader: header-found parts, vtime at second resolution in UTC+8, actions
mapped to the toolkit's Tmall bits, a default split from the log's last day, located errors; and the
synthetic generator's format and funnel order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from recsys.data.errors import DataError
from recsys.data.prepare import make_source, prepare
from recsys.data.prepared import PreparedDataset
from recsys.data.synth import synthesize

HEADER = "item_id,user_id,action,vtime"


def write_log(root: Path, rows: list[str], name: str = "part-a.csv", header: str = HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join([header, *rows]) + "\n")
    return root


def prepare_quiet(raw: Path, out: Path):
    return prepare(make_source("tmall-rec", raw), out, log=lambda m: None)


def test_a_hand_written_log_prepares_with_every_vtime_form(tmp_path):
    raw = write_log(tmp_path / "raw", ["10,1,click,2014-11-11 09:00:05", "10,1,collect,2014-11-11 09:03",
                                       "11,1,alipay,2014-11-12", "10,2,cart,2014-11-11 23:59:59",
                                       "10,1,click,2014-11-11 09:00:05"])  # an exact duplicate
    write_log(tmp_path / "raw", ["whatever"], name="notes.csv", header="not,the,log")  # ignored: other header
    manifest = prepare_quiet(raw, tmp_path / "out")
    assert manifest.rows["read"] == 5 and manifest.rows["duplicates_dropped"] == 1 and manifest.rows["events"] == 4
    assert [f.name for f in manifest.inputs] == ["part-a.csv"]
    events = PreparedDataset(tmp_path / "out").scan_events().collect().sort("ts")
    local = dt.timezone(dt.timedelta(hours=8))
    expected = [dt.datetime(2014, 11, 11, 9, 0, 5, tzinfo=local), dt.datetime(2014, 11, 11, 9, 3, tzinfo=local),
                dt.datetime(2014, 11, 11, 23, 59, 59, tzinfo=local), dt.datetime(2014, 11, 12, tzinfo=local)]
    assert events["ts"].to_list() == [int(t.timestamp() * 1000) for t in expected]
    assert events["day"].to_list() == [20141111, 20141111, 20141111, 20141112]
    assert events.select("click", "favourite", "cart", "purchase").rows() == [
        (True, False, False, False), (False, True, False, False), (False, False, True, False),
        (False, False, False, True)]
    # Default split by the last day (11-12): validation 10-30..11-05, test 11-06..11-12.
    assert (manifest.split["train_end"], manifest.split["valid_end"]) == (20141029, 20141105)


@pytest.mark.parametrize(("row", "column", "expected"), [
    ("10,1,buy,2014-11-11 09:00:05", "action", "an action in click, collect, cart, alipay"),
    ("10,1,click,11/11/2014", "vtime", "a time YYYY-MM-DD HH:MM:SS"),
    ("10,-1,click,2014-11-11 09:00:05", "user_id", "a non-negative integer id"),
])
def test_bad_rows_name_file_line_and_column(tmp_path, row, column, expected):
    raw = write_log(tmp_path / "raw", ["10,1,click,2014-11-11 09:00:05", row])
    with pytest.raises(DataError) as info:
        prepare_quiet(raw, tmp_path / "out")
    err = info.value
    assert Path(err.path).name == "part-a.csv" and err.line == 3 and err.column == column
    assert expected in err.message
    assert not (tmp_path / "out").exists()


def test_a_folder_without_the_log_is_a_clear_error(tmp_path):
    write_log(tmp_path / "raw", ["1,2,3"], header="user_id,item_id,cat_id")
    with pytest.raises(DataError, match="no CSV file here starts with the header"):
        prepare_quiet(tmp_path / "raw", tmp_path / "out")


def test_synthetic_log_has_the_format_and_the_funnel_order(tmp_path):
    report = synthesize("tmall-rec", tmp_path / "raw", users=150, items=400, seed=3)
    path = report.paths["tianchi_2014002_rec_tmall_log.csv"]
    assert path.read_text().splitlines()[0] == HEADER and report.log_rows > 1000
    log = pl.read_csv(path)
    assert set(log["action"].unique()) == {"click", "collect", "cart", "alipay"}
    assert log["vtime"].str.contains(r"^2014-\d\d-\d\d \d\d:\d\d:\d\d$").all()
    prepare_quiet(tmp_path / "raw", tmp_path / "out")
    events = PreparedDataset(tmp_path / "out").scan_events().collect()
    # On a user's item and day, a purchase never comes before that day's click of it.
    first = events.group_by("user", "item", "day").agg(
        pl.col("ts").filter(pl.col("click")).min().alias("click"),
        pl.col("ts").filter(pl.col("purchase")).min().alias("purchase")).drop_nulls()
    assert first.height > 0 and (first["click"] <= first["purchase"]).all()
