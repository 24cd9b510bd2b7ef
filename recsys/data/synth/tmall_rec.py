"""Synthetic Tianchi 2014 "Rec Tmall" log (``item_id,user_id,action,vtime``), for ``recsys.data.tmall_rec``.

The same generative process as the IJCAI-15 generator (:mod:`.tmall`: latent user and item factors, the
click -> favourite -> cart -> purchase funnel, drifting interests, Double 11), written in the Rec Tmall
format: ``action`` as ``click``/``collect``/``cart``/``alipay`` and ``vtime`` as ``YYYY-MM-DD HH:MM:SS``
local time. The IJCAI-15 generator has day resolution; here each action gets a time of day: one session per
user, item and day starting between 08:00 and 22:00, the funnel's later actions following minutes apart (a
user's click on an item comes before its favourite, cart and purchase that day).
Same config (:class:`~.tmall.TmallSynthConfig`) and the same rows as ``recsys data synth --dataset tmall``
with the same arguments; only ``user_log_format1.csv`` is replaced by :data:`TMALL_REC_LOG_FILE`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data import schemas

from . import latent as L
from .kuairand import CsvSink
from .tmall import TmallSynthConfig, _chunk, _users, _World, user_chunks

#: IJCAI-15 ``action_type`` code -> (Rec Tmall action name, funnel position).
_ACTIONS = {0: ("click", 0), 3: ("collect", 1), 1: ("cart", 2), 2: ("alipay", 3)}
_S_TIMES = 2014002  # the random stream of the times of day (beside the IJCAI-15 generator's streams)


def rec_rows(log: dict[str, np.ndarray], cfg: TmallSynthConfig, rng: np.random.Generator) -> pl.DataFrame:
    """IJCAI-15 log columns of one chunk -> Rec Tmall rows (``item_id, user_id, action, vtime``)."""
    codes = np.asarray(log["action_type"], dtype=np.int64)
    names = np.array([_ACTIONS[c][0] for c in range(4)], dtype=object)
    step = np.array([_ACTIONS[c][1] for c in range(4)], dtype=np.int64)
    n = codes.shape[0]
    mmdd = np.asarray(log["time_stamp"], dtype=np.int64)
    # One session per user, item and day: its start and the gap between funnel steps come from a hash of
    # the three, so that day's click of the item precedes its favourite, cart and purchase; repeats of an
    # action get a few seconds of jitter (exact repeats stay possible, like the real log's duplicates).
    key = (np.asarray(log["user_id"], dtype=np.uint64) * np.uint64(1_000_003)
           + np.asarray(log["item_id"], dtype=np.uint64)) * np.uint64(1_009) + mmdd.astype(np.uint64)
    h = key * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    start = 8 * 3600 + (h % np.uint64(14 * 3600)).astype(np.int64)  # 08:00-22:00
    gap = 30 + ((h >> np.uint64(20)) % np.uint64(540)).astype(np.int64)  # 30 s to 9.5 min between steps
    seconds = np.minimum(start + step[codes] * gap + rng.integers(0, 30, n), 86_399)
    year = schemas.TMALL_DEFAULT_YEAR  # the IJCAI-15 generator's six months end on 11-11 of this year
    days = pl.Series([f"{year}-{m // 100:02d}-{m % 100:02d}" for m in range(100, 1232)])
    day_text = days.gather(mmdd - 100)
    hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
    vtime = day_text + " " + pl.Series(hh).cast(pl.String).str.zfill(2) + ":" + \
        pl.Series(mm).cast(pl.String).str.zfill(2) + ":" + pl.Series(ss).cast(pl.String).str.zfill(2)
    return pl.DataFrame({
        "item_id": pl.Series(np.asarray(log["item_id"], dtype=np.int64)),
        "user_id": pl.Series(np.asarray(log["user_id"], dtype=np.int64)),
        "action": pl.Series(names[codes].tolist(), dtype=pl.String),
        "vtime": vtime,
    })


def write_tmall_rec(cfg: TmallSynthConfig, directory: str | Path, progress=None) -> dict[str, int]:
    """Write :data:`TMALL_REC_LOG_FILE` into an existing ``directory``; returns ``{file name: data rows}``."""
    directory = Path(directory)
    world = _World(cfg)
    sink = CsvSink(directory / schemas.TMALL_REC_LOG_FILE, schemas.TMALL_REC_LOG)
    try:
        t0 = time.perf_counter()
        for ci, (lo, hi) in enumerate(user_chunks(cfg)):
            lat = _users(world, lo, hi)
            log, _, _ = _chunk(world, lat, lo, L.make_rng(cfg.seed, L.S_EVENTS, ci))
            sink.write(rec_rows(log, cfg, np.random.default_rng([cfg.seed, _S_TIMES, ci])))
            if progress is not None:
                progress(f"tmall-rec users {hi}/{cfg.users} ({time.perf_counter() - t0:.1f}s)")
    finally:
        sink.close()
    return {schemas.TMALL_REC_LOG_FILE: sink.rows}
