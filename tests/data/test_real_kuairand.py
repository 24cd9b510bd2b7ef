"""The readers against real bytes: the first 300 rows of KuaiRand-Pure's two feature files (CC BY-SA 4.0,
see tests/data/fixtures/kuairand-pure-real/SOURCE.md)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data import csvfile
from recsys.data.kuairand import KuaiRandSource
from recsys.data.schemas import KUAIRAND_USER_FEATURES, KUAIRAND_VIDEO_BASIC

REAL_KUAIRAND = Path(__file__).parent / "fixtures" / "kuairand-pure-real"

USERS = REAL_KUAIRAND / "user_features_pure.csv"
VIDEOS = REAL_KUAIRAND / "video_features_basic_pure.csv"


def test_real_headers_match_the_schemas():
    csvfile.check_header(USERS, KUAIRAND_USER_FEATURES)
    csvfile.check_header(VIDEOS, KUAIRAND_VIDEO_BASIC)


def test_schema_round_trips_real_bytes_exactly():
    # Parsing with the schema and writing back reproduces the real files byte for byte: the schema's
    # dtypes are the real ones and the synthetic writers (which write through it) format like the real data.
    for path, schema in ((USERS, KUAIRAND_USER_FEATURES), (VIDEOS, KUAIRAND_VIDEO_BASIC)):
        assert pl.read_csv(path, schema=schema).write_csv().encode() == path.read_bytes()


def test_user_features_quirks():
    raw = pl.read_csv(USERS, schema=KUAIRAND_USER_FEATURES)
    table = KuaiRandSource(REAL_KUAIRAND, "pure").user_features()
    frame = table.frame
    assert frame.height == 300
    sentinels = int((raw["is_live_streamer"] == -124).sum())
    assert sentinels > 0
    # -124 becomes missing, every other value is kept
    assert int(frame["is_live_streamer"].null_count()) == sentinels
    assert set(frame["is_live_streamer"].drop_nulls().to_list()) == {1}
    # empty float fields stay missing
    assert frame["onehot_feat4"].null_count() == raw["onehot_feat4"].null_count() > 0
    assert "user_active_degree" in table.categorical and "register_days" in table.numeric


def test_video_features_tags_and_missing_values():
    raw = pl.read_csv(VIDEOS, schema=KUAIRAND_VIDEO_BASIC)
    table = KuaiRandSource(REAL_KUAIRAND, "pure").item_features(None)
    frame = table.frame
    assert frame.height == 300
    # quoted, comma-joined tags -> lists of ints, element for element
    expected = [None if t is None else [int(x) for x in t.split(",")] for t in raw["tag"].to_list()]
    assert frame["tag"].to_list() == expected
    assert any(t is not None and len(t) > 1 for t in expected) and None in expected
    # missing durations and music types stay missing; music_id 0 means "no music"
    assert frame["video_duration"].null_count() == raw["video_duration"].null_count() > 0
    assert frame["music_id"].null_count() == int((raw["music_id"] == 0).sum())
    assert frame["upload_date"].null_count() == 0
