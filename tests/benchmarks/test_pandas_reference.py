"""The pandas reference of the data-preparation benchmark equals ``prepare`` on small Tmall data, and the
benchmark's comparison catches differences. Fast: ~20k-row logs written in ``tmp_path``."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.data.prepare import PrepareOptions, make_source, prepare

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reference = _load("pandas_reference")
bench = _load("data_prepare")


def _both(raw: Path, tmp: Path, options: PrepareOptions | None = None) -> tuple[Path, Path]:
    got, want = tmp / "recsys", tmp / "pandas"
    prepare(make_source("tmall", raw), got, options or PrepareOptions(), force=True, log=lambda _m: None)
    reference.prepare_tmall(raw, want)
    return got, want


@pytest.fixture(scope="module")
def quirky_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~20k rows with every quirk: zero-padded ``0829`` days, missing brands as empty and ``NULL``, items
    whose rows disagree on category/seller/brand, duplicates, user_info with extra and repeated users."""
    raw = tmp_path_factory.mktemp("tmall-quirky")
    bench.write_tmall_minimal(raw, 20_000, seed=7, zero_pad=True, null_text="mixed", side_noise=0.03)
    return raw


def test_minimal_generator_writes_the_tmall_format(quirky_raw: Path) -> None:
    text = (quirky_raw / "user_log_format1.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type"
    assert text.endswith("\n")
    rows = [line.split(",") for line in lines[1:]]
    assert 15_000 < len(rows) < 25_000 and all(len(r) == 7 for r in rows)
    stamps = {r[5] for r in rows}
    assert "1111" in stamps and any(s.startswith("0") for s in stamps) and max(stamps) == "1111"
    assert {r[4] for r in rows} >= {"", "NULL"}
    assert {r[6] for r in rows} == {"0", "1", "2", "3"}
    assert len(set(lines[1:])) < len(rows)  # exact duplicate rows
    users = [r[0] for r in rows]
    assert sum(a != b for a, b in zip(users, users[1:])) + 1 == len(set(users))  # grouped by user


def test_reference_equals_prepare_on_quirky_data(quirky_raw: Path, tmp_path: Path) -> None:
    got, want = _both(quirky_raw, tmp_path)
    assert reference.compare_prepared(got, want) == []
    reference.prepare_tmall(quirky_raw, tmp_path / "tuned", sequences="offsets")
    assert reference.compare_prepared(got, tmp_path / "tuned") == []
    items = pl.read_parquet(want / "items.parquet")
    assert items["brand"].eq(0).sum() > 1  # padding and items without a brand
    manifest = (want / "manifest.json").read_text()
    assert '"duplicates_dropped": 0' not in manifest and '"merged": 0' not in manifest


def test_reference_equals_prepare_per_bucket(quirky_raw: Path, tmp_path: Path) -> None:
    """Several user buckets: every part equals the reference rows of its users, in order."""
    got, want = _both(quirky_raw, tmp_path, PrepareOptions(rows_per_bucket=5_000))
    assert len(list((got / "events").glob("part-*.parquet"))) > 1
    assert reference.compare_prepared(got, want) == []


def test_reference_equals_prepare_on_project_generator(tmp_path: Path) -> None:
    synth = pytest.importorskip("recsys.data.synth")
    raw = tmp_path / "raw"
    synth.synthesize("tmall", raw, users=120, items=1_500, seed=3)
    got, want = _both(raw, tmp_path)
    assert reference.compare_prepared(got, want) == []


def test_compare_catches_differences(quirky_raw: Path, tmp_path: Path) -> None:
    got, want = _both(quirky_raw, tmp_path)
    cases = {
        "events/part-00000.parquet": lambda f: f[[1, 0, *range(2, f.height)]],  # row order
        "sequences/part-00000.parquet": lambda f: f.head(f.height - 1),  # a user missing
        "items.parquet": lambda f: f.with_columns(pl.col("seller").reverse()),
        "users.parquet": lambda f: f.with_columns(pl.col("gender").cast(pl.Int64)),  # dtype
        "vocab/brand.parquet": lambda f: f.with_columns(pl.col("count") + 1),
    }
    for name, change in cases.items():
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(got, bad)
        change(pl.read_parquet(got / name)).write_parquet(bad / name)
        problems = reference.compare_prepared(bad, want)
        assert problems and problems[0].startswith(name.split("/")[0].removesuffix(".parquet")), (name, problems)
