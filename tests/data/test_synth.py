"""Synthetic KuaiRand / Tmall generators: exact file format, determinism, planted structure, quirks."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import schemas as S
from recsys.data.synth import (
    KuaiRandSynthConfig,
    TmallSynthConfig,
    kuairand_truth,
    make_config,
    synthesize,
    tmall_dates,
    tmall_truth,
)

REAL = Path("/work/shared/data/kuairand-pure-real")
needs_real = pytest.mark.skipif(not (REAL / "user_features_pure.csv").exists(), reason="real KuaiRand files absent")

def kuairand_schema_of(name: str) -> S.Schema:
    if name.startswith("log_"):
        return S.KUAIRAND_LOG
    if name.startswith("user_features"):
        return S.KUAIRAND_USER_FEATURES
    if name.startswith("video_features_basic"):
        return S.KUAIRAND_VIDEO_BASIC
    return S.KUAIRAND_VIDEO_STATISTIC


TMALL_FILES = {S.TMALL_USER_LOG_FILE: S.TMALL_USER_LOG, S.TMALL_USER_INFO_FILE: S.TMALL_USER_INFO,
               S.TMALL_TRAIN_FILE: S.TMALL_TRAIN, S.TMALL_TEST_FILE: S.TMALL_TEST}


# ---------------------------------------------------------------------------------------------------------
# fixtures (module scope: each dataset is generated once)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pure(tmp_path_factory):
    out = tmp_path_factory.mktemp("kr") / "data"
    rep = synthesize("kuairand-pure", out, users=300, items=1000, seed=1, rows_per_user_day=30,
                     random_rows_per_user_day=5, late_volume=1.0)
    rel = S.KUAIRAND_RELEASES["pure"]
    std = pl.concat([pl.read_csv(out / f, schema=S.KUAIRAND_LOG) for f in rel.standard_logs])
    rnd = pl.read_csv(out / rel.random_logs[0], schema=S.KUAIRAND_LOG)
    return rep, kuairand_truth(rep.config), std, rnd


@pytest.fixture(scope="module")
def tmall(tmp_path_factory):
    out = tmp_path_factory.mktemp("tm") / "data"
    rep = synthesize("tmall", out, users=1500, items=20000, sellers=300, seed=3, rows_per_user_day=2.0)
    log = pl.read_csv(out / S.TMALL_USER_LOG_FILE, schema=S.TMALL_USER_LOG)
    return rep, tmall_truth(rep.config), log


def _small(dataset: str, out: Path, seed: int = 0, **kw):
    if dataset == "tmall":
        kw = {"users": 60, "items": 800, "days": 40, "rows_per_user_day": 2.0, **kw}
    else:
        kw = {"users": 20, "items": 300, "days": 30, "rows_per_user_day": 8.0, **kw}
    return synthesize(dataset, out, seed=seed, **kw)


# ---------------------------------------------------------------------------------------------------------
# file names, headers, column order, format
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["kuairand-pure", "kuairand-1k", "kuairand-27k"])
def test_kuairand_files_and_headers(tmp_path, dataset):
    rep = _small(dataset, tmp_path / "data")
    rel = S.KUAIRAND_RELEASES[dataset.split("-")[1]]
    assert sorted(p.name for p in rep.out.iterdir()) == sorted(rel.files)
    assert list(rep.files) == list(rel.files)
    for name in rel.files:
        schema = kuairand_schema_of(name)
        text = (rep.out / name).read_bytes()
        assert text.split(b"\n", 1)[0].decode() == S.csv_header(schema)
        assert text.endswith(b"\n") and b"\r" not in text
        df = pl.read_csv(rep.out / name, schema=schema)
        assert df.columns == list(schema) and df.height == rep.files[name]
        assert df.write_csv().encode() == text  # polars re-writes the exact bytes
    assert not [p for p in rep.out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_tmall_files_and_headers(tmall):
    rep, _, _ = tmall
    assert sorted(p.name for p in rep.out.iterdir()) == sorted(TMALL_FILES)
    for name, schema in TMALL_FILES.items():
        text = (rep.out / name).read_bytes()
        assert text.split(b"\n", 1)[0].decode() == S.csv_header(schema)
        df = pl.read_csv(rep.out / name, schema=schema)
        assert df.columns == list(schema) and df.height == rep.files[name] > 0
        assert df.write_csv().encode() == text
    # test file: prob is an empty field on every row
    lines = (rep.out / S.TMALL_TEST_FILE).read_text().splitlines()[1:]
    assert all(re.fullmatch(r"\d+,\d+,", line) for line in lines)
    # the log: plain integers, empty brand when missing, mmdd time stamps without zero padding
    body = (rep.out / S.TMALL_USER_LOG_FILE).read_text().splitlines()[1:]
    assert all(re.fullmatch(r"\d+,\d+,\d+,\d+,\d*,[1-9]\d{2,3},[0-3]", line) for line in body[:20000])


def _fields(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))[1:]


def _check_text_format(path: Path, schema: S.Schema) -> None:
    """Fields the real format would produce: quoting only around a comma, floats like repr, empty = missing."""
    text = path.read_text()
    for quoted in re.findall(r'"[^"]*"', text):
        assert "," in quoted, quoted
    cols = list(schema)
    for row in _fields(path):
        assert len(row) == len(cols)
        for name, value in zip(cols, row):
            dtype = schema[name]
            if value == "":
                continue
            if dtype == pl.Float64():
                assert re.fullmatch(r"-?\d+\.\d+", value), (name, value)  # e.g. 87433.0, no exponent
            elif dtype == pl.Int64():
                assert re.fullmatch(r"-?\d+", value), (name, value)
            else:
                assert value not in ("null", "None", "NaN", "nan"), (name, value)


def _parse_range(label: str):
    """'0', '(0,10]', '[1k,5k)', '500+', '15-30' -> a predicate (the real files satisfy it too)."""
    num = lambda s: float(s.replace("k", "e3").replace("w", "e4"))  # noqa: E731
    if label.endswith("+"):
        lo = num(label[:-1])
        return lambda x: x >= lo
    m = re.fullmatch(r"([\[(])([\dkw.]+),([\dkw.]+)([\])])", label)
    if m:
        lo, hi = num(m.group(2)), num(m.group(3))
        return lambda x: (x >= lo if m.group(1) == "[" else x > lo) and (x <= hi if m.group(4) == "]" else x < hi)
    m = re.fullmatch(r"(\d+)-(\d+)", label)
    if m:
        return lambda x: int(m.group(1)) <= x <= int(m.group(2))
    return lambda x: x == num(label)


def _check_user_features(df: pl.DataFrame) -> None:
    for num, rng in (("follow_user_num", "follow_user_num_range"), ("fans_user_num", "fans_user_num_range"),
                     ("friend_user_num", "friend_user_num_range"), ("register_days", "register_days_range")):
        for label, values in df.group_by(rng).agg(pl.col(num)).iter_rows():
            ok = _parse_range(label)
            assert all(ok(v) for v in values), (label, min(values), max(values))


@needs_real
def test_feature_files_match_real_format(pure):
    rep = pure[0]
    real_u = pl.read_csv(REAL / "user_features_pure.csv", schema=S.KUAIRAND_USER_FEATURES)
    real_v = pl.read_csv(REAL / "video_features_basic_pure.csv", schema=S.KUAIRAND_VIDEO_BASIC)
    # the method: polars re-writing reproduces the real bytes ...
    assert real_u.write_csv().encode() == (REAL / "user_features_pure.csv").read_bytes()
    assert real_v.write_csv().encode() == (REAL / "video_features_basic_pure.csv").read_bytes()
    syn_u = pl.read_csv(rep.out / "user_features_pure.csv", schema=S.KUAIRAND_USER_FEATURES)
    syn_v = pl.read_csv(rep.out / "video_features_basic_pure.csv", schema=S.KUAIRAND_VIDEO_BASIC)
    # ... and the synthetic bytes too
    assert syn_u.write_csv().encode() == (rep.out / "user_features_pure.csv").read_bytes()
    assert syn_v.write_csv().encode() == (rep.out / "video_features_basic_pure.csv").read_bytes()
    for path, schema in ((REAL / "user_features_pure.csv", S.KUAIRAND_USER_FEATURES),
                         (rep.out / "user_features_pure.csv", S.KUAIRAND_USER_FEATURES),
                         (REAL / "video_features_basic_pure.csv", S.KUAIRAND_VIDEO_BASIC),
                         (rep.out / "video_features_basic_pure.csv", S.KUAIRAND_VIDEO_BASIC)):
        _check_text_format(path, schema)
    _check_text_format(rep.out / "video_features_statistic_pure.csv", S.KUAIRAND_VIDEO_STATISTIC)
    # same vocabularies as the real files
    for col in ("user_active_degree", "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
                "register_days_range", "is_live_streamer", "is_lowactive_period"):
        assert set(syn_u[col].unique()) <= set(real_u[col].unique()), col
    for col in ("video_type", "upload_type", "visible_status", "music_type"):
        assert set(syn_v[col].drop_nulls().unique()) <= set(real_v[col].drop_nulls().unique()), col
    assert set(syn_u["is_live_streamer"].unique()) == {S.KUAIRAND_SENTINEL, 1}
    _check_user_features(real_u)
    _check_user_features(syn_u)
    # empty float fields where the real file has them
    for col in ("onehot_feat4", "onehot_feat12", "onehot_feat17"):
        assert syn_u[col].null_count() > 0
    for col in ("video_duration", "music_type"):
        assert syn_v[col].null_count() > 0
    # tags: 1..3 comma-joined ints, quoted when several
    tags = syn_v["tag"].drop_nulls()
    assert tags.str.contains(",").any() and tags.str.contains(r"^\d+(,\d+){0,2}$").all()
    assert syn_v["upload_dt"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert (syn_v["music_id"] == 0).any() and syn_v.filter(pl.col("music_id") == 0)["music_type"].null_count() > 0


# ---------------------------------------------------------------------------------------------------------
# determinism, config, output handling
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["kuairand-pure", "tmall"])
def test_determinism(tmp_path, dataset):
    a = _small(dataset, tmp_path / "a", seed=5)
    b = _small(dataset, tmp_path / "b", seed=5)
    c = _small(dataset, tmp_path / "c", seed=6)
    for name in a.files:
        assert (a.out / name).read_bytes() == (b.out / name).read_bytes(), name
    logs = [n for n in a.files if n.startswith(("log_", "user_log"))]
    assert any((a.out / n).read_bytes() != (c.out / n).read_bytes() for n in logs)
    truth = kuairand_truth if dataset != "tmall" else tmall_truth
    ta, tb = truth(a.config), truth(b.config)
    assert np.array_equal(ta.item_factors, tb.item_factors) and np.array_equal(ta.daily_interest, tb.daily_interest)


def test_output_folder_handling(tmp_path):
    out = tmp_path / "data"
    _small("kuairand-pure", out, days=2)
    with pytest.raises(FileExistsError):
        _small("kuairand-pure", out, days=2)
    rep = _small("kuairand-pure", out, days=3, overwrite=True)
    assert set(pl.read_csv(out / "log_standard_4_22_to_5_08_pure.csv", schema=S.KUAIRAND_LOG)["date"]) <= {
        20220506, 20220507, 20220508}
    assert rep.config.days == 3
    # an interrupted run leaves nothing behind
    out2 = tmp_path / "interrupted"

    def boom(msg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize("tmall", out2, users=10, items=100, days=5, progress=boom)
    assert not out2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders either
    # config validation
    with pytest.raises(TypeError):
        make_config("tmall", no_such_field=1)
    with pytest.raises(ValueError):
        make_config("kuairand-pure", days=31)
    with pytest.raises(ValueError):
        make_config("nope")
    cfg = make_config("kuairand-1k")
    assert (cfg.users, cfg.items, cfg.days) == (1_000, 4_369_953, 30)
    assert isinstance(make_config("tmall"), TmallSynthConfig) and isinstance(cfg, KuaiRandSynthConfig)


# ---------------------------------------------------------------------------------------------------------
# KuaiRand: dates, ordering, rates, quirks, planted structure
# ---------------------------------------------------------------------------------------------------------


def test_kuairand_dates_order_and_files(pure):
    rep, truth, std, rnd = pure
    rel = S.KUAIRAND_RELEASES["pure"]
    early = pl.read_csv(rep.out / rel.standard_logs[0], schema=S.KUAIRAND_LOG)
    late = pl.read_csv(rep.out / rel.standard_logs[1], schema=S.KUAIRAND_LOG)
    assert early["date"].min() == 20220409 and early["date"].max() == 20220421
    assert late["date"].min() == 20220422 and late["date"].max() == 20220508
    assert rnd["date"].min() >= 20220422
    assert (std["is_rand"] == 0).all() and (rnd["is_rand"] == 1).all()
    assert list(truth.dates[[0, -1]]) == [20220409, 20220508]
    for df in (early, late, rnd):
        u, t = df["user_id"].to_numpy(), df["time_ms"].to_numpy()
        assert (np.diff(u) >= 0).all() and ((np.diff(u) > 0) | (np.diff(t) >= 0)).all()
        local = pl.from_epoch(df["time_ms"], time_unit="ms").dt.offset_by("8h")
        assert (local.dt.strftime("%Y%m%d").cast(pl.Int64) == df["date"]).all()
        hour = local.dt.hour().cast(pl.Int64).to_numpy() * 100
        hm = df["hourmin"].to_numpy()
        assert np.isin(hm - hour, [0, 100]).all() and set(np.unique(hm)) <= set(range(0, 2400, 100))
        assert 0.1 < (hm != hour).mean() < 0.5
    # requests: several videos share one time_ms, at most 6
    per_req = std.group_by("user_id", "time_ms").len()["len"]
    # (> 6 only when a duplicated row or two requests in the same millisecond)
    assert (per_req > 7).mean() < 0.002 and (per_req >= 2).mean() > 0.3
    assert set(std["user_id"].unique()) <= set(range(300)) and std["video_id"].max() < 1000
    # expected volume
    exp = rep.config.expected_rows()
    assert abs(std.height / exp["standard"] - 1) < 0.1 and abs(rnd.height / exp["random"] - 1) < 0.15


def test_kuairand_days_window(tmp_path):
    rep = _small("kuairand-pure", tmp_path / "d", days=5)
    early = pl.read_csv(rep.out / "log_standard_4_08_to_4_21_pure.csv", schema=S.KUAIRAND_LOG)
    late = pl.read_csv(rep.out / "log_standard_4_22_to_5_08_pure.csv", schema=S.KUAIRAND_LOG)
    assert early.height == 0 and sorted(late["date"].unique()) == [20220504, 20220505, 20220506, 20220507, 20220508]


def test_kuairand_rates_and_quirks(pure):
    _, truth, std, rnd = pure
    rate = {c: std[c].mean() for c in ("is_click", "long_view", "is_like", "is_comment", "is_follow", "is_forward",
                                       "is_hate")}
    assert 0.38 < rate["is_click"] < 0.55 and 0.26 < rate["long_view"] < 0.40
    assert 0.009 < rate["is_like"] < 0.03 and 0.001 < rate["is_comment"] < 0.005
    assert 0.0003 < rate["is_follow"] < 0.003 and 0.0003 < rate["is_forward"] < 0.003 and rate["is_hate"] < 0.002
    assert rnd["is_click"].mean() < rate["is_click"]  # random exposures are less relevant
    for df in (std, rnd):
        click = df["is_click"].to_numpy() == 1
        for col in ("long_view", "is_like", "is_follow", "is_comment", "is_forward", "is_profile_enter"):
            assert (df[col] <= df["is_click"]).all(), col  # click -> long_view -> like -> follow/comment/forward
        assert df["play_time_ms"].min() >= 0 and df["play_time_ms"].max() <= 1_020_000
        assert df["profile_stay_time"].max() <= 300_000 and df["comment_stay_time"].max() <= 300_000
        assert df["tab"].min() >= 0 and df["tab"].max() <= 14
        for col in ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate", "long_view",
                    "is_profile_enter"):
            assert set(df[col].unique()) <= {0, 1}
        assert (df.filter(pl.col("is_profile_enter") == 0)["profile_stay_time"] == 0).all()
        # long views play at least min(duration, 18 s); other clicks less
        dur = truth.item_duration_ms[df["video_id"].to_numpy()]
        play, lv = df["play_time_ms"].to_numpy(), df["long_view"].to_numpy() == 1
        thr = np.minimum(dur, 18_000)
        assert (play[lv] >= np.minimum(thr[lv], 1_020_000) - 1).all() and (play[click & ~lv] < thr[click & ~lv]).all()
        # duration_ms: the video's duration, 0 = missing at ~2.5%
        d = df["duration_ms"].to_numpy()
        assert (d[d > 0] == dur[d > 0]).all() and 0.015 < (d == 0).mean() < 0.04
        # exact duplicate rows: adjacent copies at ~1.4%
        arr = df.to_numpy()
        assert 0.007 < (arr[1:] == arr[:-1]).all(axis=1).mean() < 0.025
    # deeper actions: higher affinity (like > click > no click); hate: low affinity
    a = truth.affinity(std["user_id"].to_numpy(), std["video_id"].to_numpy(), truth.day_index(std["date"].to_numpy()))
    c = std["is_click"].to_numpy() == 1
    lk = std["is_like"].to_numpy() == 1
    ht = std["is_hate"].to_numpy() == 1
    assert a[lk].mean() > a[c].mean() + 0.05 > a[~c].mean() + 0.1
    assert a[ht].mean() < a.mean() - 0.05


def test_kuairand_planted_affinity_and_popularity(pure):
    rep, truth, std, rnd = pure
    cfg = rep.config
    u, i = std["user_id"].to_numpy(), std["video_id"].to_numpy()
    d = truth.day_index(std["date"].to_numpy())
    click = std["is_click"].to_numpy() == 1
    rand_items = np.random.default_rng(0).integers(0, cfg.items, u.size)
    # interacted items have clearly higher affinity than random items (daily and long-run interest)
    assert truth.affinity(u[click], i[click], d[click]).mean() > truth.affinity(u, rand_items, d).mean() + 0.15
    assert truth.affinity(u[click], i[click]).mean() > truth.affinity(u, rand_items).mean() + 0.1
    ra = truth.affinity(rnd["user_id"].to_numpy(), rnd["video_id"].to_numpy(), truth.day_index(rnd["date"].to_numpy()))
    assert truth.affinity(u, i, d).mean() > ra.mean() + 0.1
    # random log: uniform items (no popularity)
    rc = np.bincount(rnd["video_id"].to_numpy(), minlength=cfg.items)
    assert np.corrcoef(np.log(truth.item_rank), rc)[0, 1] > -0.1
    # Zipf: log-log slope of exposure counts vs rank near -alpha
    cnt = np.bincount(i, minlength=cfg.items)
    ok = cnt >= 20
    slope_truth = np.polyfit(np.log(truth.item_rank[ok]), np.log(cnt[ok]), 1)[0]
    srt = np.sort(cnt)[::-1]
    ok2 = srt >= 20
    slope_emp = np.polyfit(np.log(np.arange(1, srt.size + 1)[ok2]), np.log(srt[ok2]), 1)[0]
    assert abs(slope_truth + cfg.zipf_alpha) < 0.25 and abs(slope_emp + cfg.zipf_alpha) < 0.25


def test_kuairand_truth_action_probabilities_are_calibrated(pure):
    """The truth's per-exposure probabilities match the sampled log: overall rates and per-decile rates
    (a formula drifting from the sampler, e.g. a lift changed in one place only, shows up here)."""
    _, truth, std, _ = pure
    probs = truth.action_probabilities(std["user_id"].to_numpy(), std["video_id"].to_numpy(),
                                       truth.day_index(std["date"].to_numpy()))
    for col in ("is_click", "long_view", "is_like", "is_follow", "is_comment", "is_forward"):
        p, y = probs[col], std[col].to_numpy()
        assert ((0 <= p) & (p <= 1)).all()
        assert abs(p.mean() / y.mean() - 1) < 0.1, col
    p, y = probs["is_like"], std["is_like"].to_numpy()
    bins = np.array_split(np.argsort(p), 10)
    for b in bins:  # deciles of the predicted like probability: within 3 binomial sds (+ 0.2% slack)
        assert abs(y[b].mean() - p[b].mean()) < 3 * np.sqrt(p[b].mean() * (1 - p[b].mean()) / b.size) + 0.002
    assert y[bins[-1]].mean() > 5 * y[bins[0]].mean() + 0.01  # and they separate


def test_kuairand_drift_and_dormant_topic(pure):
    rep, truth, std, _ = pure
    days = rep.config.days
    u, i = std["user_id"].to_numpy(), std["video_id"].to_numpy()
    d = truth.day_index(std["date"].to_numpy())
    assert np.array_equal(truth.day_of_time_ms(std["time_ms"].to_numpy()), d)  # the log's time_ms is in its date
    # drift: day-t items match the day-t interest better than the interest of a far-away day
    far = np.where(d >= days // 2, 0, days - 1)
    same, other = truth.affinity(u, i, d).mean(), truth.affinity(u, i, far).mean()
    assert same > other + 0.05
    near = np.clip(d + np.where(d >= days // 2, -1, 1), 0, days - 1)
    assert truth.affinity(u, i, near).mean() > other + 0.04  # adjacent days are close, far days are not
    # the dormant topic: present early, absent through the gap, back near the end
    dorm = truth.item_topic[i] == truth.dormant_topic[u]
    act = truth.dormant_active[d]
    assert act[d < 3].all() and act[d >= days - 3].all() and not act[(d > days // 3) & (d < 2 * days // 3)].any()
    early, late = act & (d < days // 2), act & (d >= days // 2)
    assert dorm[~act].sum() == 0
    assert dorm[early].mean() > 0.1 and dorm[late].mean() > 0.1


def test_kuairand_features_consistent_with_truth(pure):
    rep, truth, std, _ = pure
    cfg = rep.config
    users = pl.read_csv(rep.out / "user_features_pure.csv", schema=S.KUAIRAND_USER_FEATURES)
    basic = pl.read_csv(rep.out / "video_features_basic_pure.csv", schema=S.KUAIRAND_VIDEO_BASIC)
    stat = pl.read_csv(rep.out / "video_features_statistic_pure.csv", schema=S.KUAIRAND_VIDEO_STATISTIC)
    assert users["user_id"].to_list() == list(range(cfg.users))
    assert basic["video_id"].to_list() == list(range(cfg.items)) == stat["video_id"].to_list()
    assert (basic["author_id"].to_numpy() == truth.item_author_id).all()
    vd = basic["video_duration"].to_numpy()
    assert np.array_equal(vd[~np.isnan(vd)], truth.item_duration_ms[~np.isnan(vd)].astype(float))
    # the first tag is a function of the topic
    tagged = basic.with_columns(topic=pl.Series(truth.item_topic)).filter(pl.col("tag").is_not_null())
    pairs = tagged.select("topic", pl.col("tag").str.split(",").list.first()).unique()
    assert pairs["topic"].n_unique() == pairs.height
    # statistic features: non-negative, consistent, and follow popularity
    floats = stat.select(S.KUAIRAND_VIDEO_STATISTIC_FLOATS)
    assert min(floats.min().row(0)) >= 0.0 and floats.null_count().sum_horizontal()[0] == 0
    assert (stat["play_cnt"] <= stat["show_cnt"]).all() and (stat["like_user_num"] <= stat["like_cnt"]).all()
    assert (stat["show_user_num"] <= stat["show_cnt"]).all()
    assert np.corrcoef(np.log(truth.item_rank), np.log1p(stat["show_cnt"].to_numpy()))[0, 1] < -0.8
    # degree follows activity
    act = users.with_columns(a=pl.Series(truth.user_activity)).group_by("user_active_degree").agg(pl.col("a").mean())
    m = dict(act.iter_rows())
    assert m["full_active"] > m.get("high_active", 0)


def test_kuairand_27k_splits(tmp_path):
    rep = _small("kuairand-27k", tmp_path / "k", users=21, items=301, days=20)
    rel = S.KUAIRAND_RELEASES["27k"]
    half = (21 + 1) // 2
    logs = {n: pl.read_csv(rep.out / n, schema=S.KUAIRAND_LOG) for n in rel.standard_logs}
    p1 = [n for n in rel.standard_logs if n.endswith("part1.csv")]
    p2 = [n for n in rel.standard_logs if n.endswith("part2.csv")]
    for n in p1:
        assert logs[n]["user_id"].max() < half
    for n in p2:
        assert logs[n]["user_id"].min() >= half
    for n in rel.standard_logs:
        if "4_08_to_4_21" in n:
            assert logs[n]["date"].max() <= 20220421
        else:
            assert logs[n]["date"].min() >= 20220422
    stats = [pl.read_csv(rep.out / n, schema=S.KUAIRAND_VIDEO_STATISTIC) for n in rel.video_statistic]
    ids = pl.concat(stats)["video_id"]
    assert ids.to_list() == list(range(301))
    sizes = [rep.files[n] for n in rel.video_statistic]
    assert max(sizes) - min(sizes) <= 1


def test_kuairand_1k_default_rate(tmp_path):
    rep = synthesize("kuairand-1k", tmp_path / "o", users=8, items=5000, days=2, random_rows_per_user_day=1)
    n = sum(rep.files[f] for f in S.KUAIRAND_RELEASES["1k"].standard_logs)
    assert 380 < rep.config.rows_per_user_day < 390
    # rows = sum over users of activity x days x rows_per_user_day (x 1 + duplicate_rate)
    truth = kuairand_truth(rep.config)
    expected = rep.config.expected_rows()["standard"] * truth.user_activity.mean()
    assert abs(n / expected - 1) < 0.05


# ---------------------------------------------------------------------------------------------------------
# Tmall
# ---------------------------------------------------------------------------------------------------------


def test_tmall_catalogue_dates_and_order(tmall):
    rep, truth, log = tmall
    cfg = rep.config
    assert abs(log.height / cfg.expected_rows() - 1) < 0.1
    # each item has one category, seller and brand (the truth's)
    per_item = log.group_by("item_id").agg(pl.col("cat_id").n_unique(), pl.col("seller_id").n_unique(),
                                           pl.col("brand_id").n_unique())
    assert (per_item.select(pl.exclude("item_id")).max().row(0)) == (1, 1, 1)
    it = log["item_id"].to_numpy()
    assert (log["cat_id"].to_numpy() == truth.item_category[it]).all()
    assert (log["seller_id"].to_numpy() == truth.item_seller[it]).all()
    brand = log["brand_id"].fill_null(-1).to_numpy()
    assert (brand == truth.item_brand[it]).all()
    assert 0.0003 < log["brand_id"].null_count() / log.height < 0.01
    # dates: mmdd of the 186 days ending 11-11
    dates = tmall_dates(186)
    assert dates[-1] == 1111 and dates[0] == 510 and set(log["time_stamp"].unique()) <= set(dates)
    assert list(truth.dates) == list(dates)
    # Double 11: a strong spike with many purchases
    per_day = log.group_by("time_stamp").len()
    spike = per_day.filter(pl.col("time_stamp") == 1111)["len"][0]
    assert spike > 10 * per_day["len"].median()
    buys = log.filter(pl.col("action_type") == 2)
    assert (buys["time_stamp"] == 1111).mean() > 0.1
    # action mix near the real one
    share = log["action_type"].value_counts().sort("action_type")["count"].to_numpy() / log.height
    assert 0.8 < share[0] < 0.95 and 0.0003 < share[1] < 0.01 and 0.03 < share[2] < 0.1 and 0.03 < share[3] < 0.1
    # rows of a user are grouped, but not time-ordered
    u = log["user_id"].to_numpy()
    runs = 1 + (u[1:] != u[:-1]).sum()
    assert runs == log["user_id"].n_unique()
    t = log["time_stamp"].to_numpy()
    inversions = ((t[1:] < t[:-1]) & (u[1:] == u[:-1])).mean()
    assert inversions > 0.2
    # natural exact duplicates: repeated clicks on one item the same day
    assert log.is_duplicated().mean() > 0.05
    # user_info: every user once, real value ranges, some empty
    info = pl.read_csv(rep.out / S.TMALL_USER_INFO_FILE, schema=S.TMALL_USER_INFO)
    assert sorted(info["user_id"].to_list()) == list(range(1, cfg.users + 1))
    assert set(info["age_range"].drop_nulls().unique()) <= set(range(9))
    assert set(info["gender"].drop_nulls().unique()) <= {0, 1, 2}
    assert info["gender"].null_count() > 0 and info["age_range"].null_count() > 0


def test_tmall_action_chains(tmall):
    _, truth, log = tmall
    day = pl.Series(truth.day_index(log["time_stamp"].to_numpy()))
    dl = log.with_columns(day=day)
    first = (dl.group_by("user_id", "item_id", "action_type").agg(pl.col("day").min().alias("d"), pl.len().alias("n"))
             .pivot(on="action_type", index=["user_id", "item_id"], values=["d", "n"]))
    bought = first.filter(pl.col("d_2").is_not_null())
    assert bought.height > 500
    assert (bought["d_0"] <= bought["d_2"]).mean() > 0.9  # the first click is not after the purchase
    assert (bought["d_2"] - bought["d_0"] > 0).mean() > 0.1  # some purchases come days later
    # every favourite / cart / purchase follows a click of the same pair (same day or earlier)
    clicks = dl.filter(pl.col("action_type") == 0).group_by("user_id", "item_id").agg(
        pl.col("day").min().alias("c"), pl.col("day").n_unique().alias("click_days"))
    acts = dl.filter(pl.col("action_type") > 0).join(clicks, on=["user_id", "item_id"], how="left")
    assert (acts["c"] <= acts["day"]).all()
    # within one intent (a pair clicked on a single day): favourite and cart not after the purchase
    one = first.join(clicks, on=["user_id", "item_id"]).filter((pl.col("click_days") == 1) & (pl.col("n_2") == 1))
    fav = one.filter(pl.col("n_3") == 1)
    assert fav.height > 100 and (fav["d_3"] <= fav["d_2"]).mean() > 0.97
    cart = one.filter(pl.col("n_1") == 1)
    assert cart.height == 0 or (cart["d_1"] <= cart["d_2"]).mean() > 0.9
    # purchased items: higher affinity than random items
    b = log.filter(pl.col("action_type") == 2)
    u, i = b["user_id"].to_numpy(), b["item_id"].to_numpy()
    d = truth.day_index(b["time_stamp"].to_numpy())
    rnd = np.random.default_rng(0).integers(1, truth.config.items + 1, u.size)
    assert truth.affinity(u, i, d).mean() > truth.affinity(u, rnd, d).mean() + 0.15
    c = log.filter(pl.col("action_type") == 0)
    ca = truth.affinity(c["user_id"].to_numpy(), c["item_id"].to_numpy(), truth.day_index(c["time_stamp"].to_numpy()))
    assert truth.affinity(u, i, d).mean() > ca.mean()  # purchases are the more relevant clicks


def test_tmall_popularity_drift_dormant(tmall):
    rep, truth, log = tmall
    cfg = rep.config
    u, i = log["user_id"].to_numpy(), log["item_id"].to_numpy()
    d = truth.day_index(log["time_stamp"].to_numpy())
    cnt = np.bincount(i, minlength=cfg.items + 1)[1:]
    ok = cnt >= 20
    slope = np.polyfit(np.log(truth.item_rank[1:][ok]), np.log(cnt[ok]), 1)[0]
    assert abs(slope + cfg.zipf_alpha) < 0.3
    far = np.where(d >= cfg.days // 2, 0, cfg.days - 1)
    assert truth.affinity(u, i, d).mean() > truth.affinity(u, i, far).mean() + 0.05
    dorm = truth.item_topic[i] == truth.dormant_topic[u]
    act = truth.dormant_active[d]
    # absent through the gap (only a few late actions of intents started in the early window)
    assert dorm[~act].mean() < 0.002
    assert dorm[act & (d < cfg.days // 2)].mean() > 0.05 and dorm[act & (d >= cfg.days // 2)].mean() > 0.05


def test_tmall_repeat_buyers(tmall):
    rep, truth, log = tmall
    train = pl.read_csv(rep.out / S.TMALL_TRAIN_FILE, schema=S.TMALL_TRAIN)
    test = pl.read_csv(rep.out / S.TMALL_TEST_FILE, schema=S.TMALL_TEST)
    assert test["prob"].null_count() == test.height > 0
    assert set(train["label"].unique()) <= {0, 1} and 0.02 < train["label"].mean() < 0.15
    pairs = pl.concat([train.select("user_id", "merchant_id"), test.select("user_id", "merchant_id")])
    assert not pairs.is_duplicated().any()
    assert not set(train["user_id"]) & set(test["user_id"])  # split by user, in two halves
    assert 0.3 < train.height / pairs.height < 0.7
    d11 = (log.filter((pl.col("action_type") == 2) & (pl.col("time_stamp") == 1111))
           .select("user_id", pl.col("seller_id").alias("merchant_id")).unique())
    assert d11.sort(["user_id", "merchant_id"]).equals(pairs.sort(["user_id", "merchant_id"]))
    # labels follow the latent loyalty (ground truth)
    p = truth.repeat_probability(train["user_id"].to_numpy(), train["merchant_id"].to_numpy())
    y = train["label"].to_numpy()
    order = np.argsort(p)
    ranks = np.empty(p.size)
    ranks[order] = np.arange(1, p.size + 1)
    auc = (ranks[y == 1].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (y.size - y.sum()))
    assert auc > 0.7
    loyal = truth.user_loyalty[train["user_id"].to_numpy()]
    assert loyal[y == 1].mean() > loyal[y == 0].mean()
    assert abs(p.mean() - y.mean()) < 0.03


def test_tmall_text_options(tmp_path):
    kw = dict(users=80, items=3000, days=120, rows_per_user_day=3.0, missing_brand_rate=0.05)
    plain = synthesize("tmall", tmp_path / "plain", **kw)
    fancy = synthesize("tmall", tmp_path / "fancy", time_stamp_zero_pad=True, missing_brand_text="NULL", **kw)
    plain_text = (plain.out / S.TMALL_USER_LOG_FILE).read_text()
    fancy_text = (fancy.out / S.TMALL_USER_LOG_FILE).read_text()
    assert re.search(r",\d{3},\d\n", plain_text) and not re.search(r",0\d{3},\d\n", plain_text)
    assert re.search(r",0\d{3},\d\n", fancy_text) and not re.search(r",[1-9]\d{2},\d\n", fancy_text)
    assert ",," in plain_text and "NULL" not in plain_text
    assert ",NULL," in fancy_text and ",," not in fancy_text
    a = pl.read_csv(plain.out / S.TMALL_USER_LOG_FILE, schema=S.TMALL_USER_LOG)
    b = pl.read_csv(fancy.out / S.TMALL_USER_LOG_FILE, schema=S.TMALL_USER_LOG, null_values="NULL")
    assert a.equals(b)  # the same data, only written differently
    for name in (S.TMALL_USER_INFO_FILE, S.TMALL_TRAIN_FILE, S.TMALL_TEST_FILE):
        assert (plain.out / name).read_bytes() == (fancy.out / name).read_bytes()


def test_kuairand_timestamps_are_utc8(pure):
    _, _, std, _ = pure
    row = std.row(0, named=True)
    local = datetime.fromtimestamp(row["time_ms"] / 1000, tz=timezone(timedelta(hours=8)))
    assert int(local.strftime("%Y%m%d")) == row["date"]


def test_tmall_action_style_drives_purchases_and_their_timing(tmall):
    """The planted action-timing structure: decisive (user, topic) pairs buy more, sooner, favourite less."""
    _, truth, log = tmall
    day = pl.Series(truth.day_index(log["time_stamp"].to_numpy()))
    pairs = (log.with_columns(day=day).group_by("user_id", "item_id").agg(
        pl.col("day").filter(pl.col("action_type") == 0).min().alias("click"),
        pl.col("day").filter(pl.col("action_type") == 2).min().alias("buy"),
        (pl.col("action_type") == 3).any().alias("fav")))
    style = truth.user_style[pairs["user_id"].to_numpy(), truth.item_topic[pairs["item_id"].to_numpy()]]
    pairs = pairs.with_columns(style=pl.Series(style))
    hi, lo = pairs.filter(pl.col("style") > 1), pairs.filter(pl.col("style") < -1)
    assert hi["buy"].is_not_null().mean() > 2 * lo["buy"].is_not_null().mean()
    assert lo["fav"].mean() > 1.5 * hi["fav"].mean()
    same_day = [(f["buy"] == f["click"]).mean() for f in (hi.filter(pl.col("buy").is_not_null()),
                                                           lo.filter(pl.col("buy").is_not_null()))]
    assert same_day[0] > same_day[1] + 0.15


def test_kuairand_engagement_style_drives_likes_and_play(pure):
    _, truth, std, _ = pure
    clicked = std.filter(pl.col("is_click") == 1, pl.col("duration_ms") > 0)
    style = truth.user_style[clicked["user_id"].to_numpy(), truth.item_topic[clicked["video_id"].to_numpy()]]
    frame = clicked.with_columns(style=pl.Series(style), ratio=pl.col("play_time_ms") / pl.col("duration_ms"))
    hi, lo = frame.filter(pl.col("style") > 1), frame.filter(pl.col("style") < -1)
    assert hi["is_like"].mean() > 3 * lo["is_like"].mean()
    assert hi["ratio"].median() > lo["ratio"].median()


@pytest.mark.parametrize("phase", [-1, 0])
def test_periodic_dormant_topic_returns_on_its_schedule(tmp_path, phase):
    """``dormant_period``: the dormant topic is clicked only on its ``dormant_on`` days of every period, at one
    phase for all users (``dormant_phase=0``) or a phase per user; the other latent draws are unchanged."""
    from recsys.data.synth import kuairand_truth, make_config, synthesize
    from recsys.data.synth import latent as L

    kw = dict(users=60, items=800, days=30, rows_per_user_day=30.0, seed=4)
    rep = synthesize("kuairand-1k", tmp_path / "p", dormant_period=10, dormant_on=3, dormant_phase=phase, **kw)
    truth = kuairand_truth(rep.config)
    log = pl.read_csv(rep.out / "log_standard_4_08_to_4_21_1k.csv")
    log = pl.concat([log, pl.read_csv(rep.out / "log_standard_4_22_to_5_08_1k.csv")])
    u, i = log["user_id"].to_numpy(), log["video_id"].to_numpy()
    d = truth.day_index(log["date"].to_numpy())
    lat = L.user_latents(rep.config, rep.config.days, 0, rep.config.users)
    on = L.dormant_on_days(rep.config, lat, truth.dormant_active, u, d)
    dorm = truth.item_topic[i] == truth.dormant_topic[u]
    assert dorm[~on].sum() == 0 and dorm[on].mean() > 0.1
    assert np.isclose(on.mean(), 0.3, atol=0.1)
    if phase == 0:
        assert (on == (d % 10 < 3)).all()
    else:
        assert len(np.unique(lat["phase"])) > 3
    plain = L.user_latents(make_config("kuairand-1k", **kw), 30, 0, 60)
    assert np.array_equal(plain["dormant"], lat["dormant"]) and np.array_equal(plain["base"], lat["base"])


def test_kuairand_click_bait_pulls_clicks_and_likes_apart(tmp_path, pure):
    """``bait_strength``: the planted appeal raises clicks and lowers what follows a click; the truth's
    probabilities stay calibrated with it; at 0 (the default) the log is the same as without the option."""
    from recsys.data.synth.kuairand import appeal

    kw = dict(users=300, items=1000, seed=1, rows_per_user_day=30, random_rows_per_user_day=5, late_volume=1.0)
    rep = synthesize("kuairand-pure", tmp_path / "bait", bait_strength=2.0, **kw)
    rel = S.KUAIRAND_RELEASES["pure"]
    std = pl.concat([pl.read_csv(tmp_path / "bait" / f, schema=S.KUAIRAND_LOG) for f in rel.standard_logs])
    ids = np.arange(20_000)
    assert abs(appeal(rep.config, ids, ids[::-1]).std() - 1) < 0.05  # unit variance over distinct pairs
    a = appeal(rep.config, std["user_id"].to_numpy(), std["video_id"].to_numpy())
    frame = std.with_columns(appeal=pl.Series(a))
    hi, lo = frame.filter(pl.col("appeal") > 1), frame.filter(pl.col("appeal") < -1)
    assert hi["is_click"].mean() > lo["is_click"].mean() + 0.2
    liked = lambda f: f.filter(pl.col("is_click") == 1)["is_like"].mean()  # noqa: E731
    assert liked(lo) > 3 * liked(hi)
    truth = kuairand_truth(rep.config)
    probs = truth.action_probabilities(std["user_id"].to_numpy(), std["video_id"].to_numpy(),
                                       truth.day_index(std["date"].to_numpy()))
    for col in ("is_click", "long_view", "is_like"):
        assert abs(probs[col].mean() / std[col].to_numpy().mean() - 1) < 0.1, col
    # the default draws are untouched by the option's existence
    synthesize("kuairand-pure", tmp_path / "plain", bait_strength=0.0, **kw)
    plain = pl.concat([pl.read_csv(tmp_path / "plain" / f, schema=S.KUAIRAND_LOG) for f in rel.standard_logs])
    assert plain.equals(pure[2])
    with pytest.raises(ValueError, match="bait_strength"):
        synthesize("kuairand-pure", tmp_path / "bad", bait_strength=-1.0, **kw)
