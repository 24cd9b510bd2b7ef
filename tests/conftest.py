"""Shared fixtures: small synthetic raw releases and their prepared datasets, made once per test session."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from recsys.data.prepare import PrepareOptions, make_source, prepare
from recsys.data.synth import synthesize

warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def raw_kuairand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small KuaiRand-Pure release (real file names and formats), 200 users x 300 videos."""
    out = tmp_path_factory.mktemp("raw") / "kuairand-pure"
    synthesize("kuairand-pure", out, users=200, items=300, seed=7)
    return out


@pytest.fixture(scope="session")
def raw_tmall(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Tmall IJCAI-15 release, 300 users x 500 items."""
    out = tmp_path_factory.mktemp("raw") / "tmall"
    synthesize("tmall", out, users=300, items=500, seed=7)
    return out


@pytest.fixture(scope="session")
def prepared_kuairand(raw_kuairand: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "kuairand-pure"
    prepare(make_source("kuairand-pure", raw_kuairand), out, PrepareOptions(), log=_quiet)
    return out


@pytest.fixture(scope="session")
def prepared_tmall(raw_tmall: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "tmall"
    prepare(make_source("tmall", raw_tmall), out, PrepareOptions(), log=_quiet)
    return out


@pytest.fixture(scope="session")
def prepared_lifelong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small KuaiRand-1K-format release with long histories (~170 clicks per user), prepared."""
    raw = tmp_path_factory.mktemp("raw") / "kuairand-1k"
    synthesize("kuairand-1k", raw, users=30, items=3000, days=30, rows_per_user_day=12.0, seed=5)
    out = tmp_path_factory.mktemp("prepared") / "kuairand-1k"
    prepare(make_source("kuairand-1k", raw), out, PrepareOptions(), log=_quiet)
    return out
