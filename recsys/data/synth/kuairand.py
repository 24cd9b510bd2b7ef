"""Synthetic KuaiRand (Pure / 1K / 27K) in the exact file format of the public release.

Writes every file of the release (``schemas.KUAIRAND_RELEASES[release].files``) with the real names,
headers, column order, dtypes and formatting (polars ``write_csv`` of frames typed exactly like the
schemas, which reproduces the real feature files byte for byte).

Generative process (on top of :mod:`.latent`)
---------------------------------------------
* **Videos.** Video ``i`` has an author (a hash of ``(seed, i)``): 5% of the videos come from a few
  prolific authors, the others from a large pool (about 0.85 distinct authors per video). An author has
  one topic (a hash of the author) and a video takes its author's topic with probability 0.85, else a
  random topic; the first ``tag`` is a function of the topic. Popularity rank, weight and latent vector
  as in :mod:`.latent`. The true duration is lognormal (median 80 s, clipped to 5 s .. 1,177,720 ms).
* **Dates.** The last ``days`` days ending 2022-05-08 (``days=30``: 20220409..20220508, as the real Pure
  logs). ``date`` is the UTC+8 date of ``time_ms``; ``hourmin`` is the UTC+8 hour as ``HH00``, one hour
  later with probability ``hourmin_lag_rate`` (as in the real data, where it cannot be derived from
  ``time_ms``).
* **Standard log (is_rand=0).** User ``u`` on day ``t`` sends ``Poisson(rows_per_user_day / m *
  activity_u)`` requests (``m`` = mean request size) at an hour drawn from a daily profile; a request
  shows 1..6 videos (``request_size_probs``) that share one ``time_ms``, ``hourmin`` and ``tab``. Each
  video: topic ~ ``P_u,t(k) * W_k``, then a video of that topic ~ popularity (redrawn if already in the
  request). Dates >= 20220422 carry ``late_volume`` times the volume of earlier dates (Pure: 0.198, as
  the real files), normalised so that 30 days give ``users * 30 * rows_per_user_day`` standard rows
  (``KuaiRandSynthConfig.expected_rows``; with ``late_volume=1``: ``users * days * rows_per_user_day``),
  times ``1 + duplicate_rate``.
* **Random log (is_rand=1).** Dates >= 20220422 only, ``Poisson(random_rows_per_user_day * activity_u)``
  single-video requests per day with the video drawn **uniformly** from all videos (the randomly
  exposed videos), same feedback model.
* **Feedback chain** with ``x = affinity_scale * affinity(u, t, i)``:
  ``click ~ sigmoid(click_bias + x)``; ``long_view`` only after a click, ``~ sigmoid(long_view_bias + x)``;
  ``like`` after a click ``~ sigmoid(like_bias + x + 1.5 long_view)``; ``follow``/``comment``/``forward``
  after a click ``~ sigmoid(bias + x + 1.5 long_view + 2 like)``; ``is_profile_enter`` after a click
  (likelier with follow); ``hate ~ sigmoid(hate_bias - 2x)``, rare and tied to low affinity.
  With ``bait_strength = b > 0`` a user-video *appeal* ``a`` (:func:`appeal`) adds ``b a`` to the click
  logit and ``-b a`` to the long-view, like and deep-action logits (click-bait: tasks that conflict).
  ``play_time_ms``: long views play at least ``min(duration, 18 s)`` (sometimes looping, capped at
  1,020,000), other clicks less than that, non-clicks 0 or a short preview. ``comment_stay_time`` and
  ``profile_stay_time`` are lognormal, capped at 300,000.
* **Quirks.** ``duration_ms = 0`` (missing) in ``missing_duration_rate`` of the rows; exact duplicate rows
  (an adjacent copy) at ``duplicate_rate``; ``is_live_streamer = -124`` (missing sentinel); empty
  ``onehot_feat4``/``onehot_feat12..17``; empty ``video_duration``, ``music_type`` and ``tag`` fields.
* **Files.** Every log is ordered by ``user_id`` then ``time_ms``. ``log_standard_4_08_to_4_21_*`` holds
  dates <= 20220421 and ``log_standard_4_22_to_5_08_*`` dates >= 20220422; in 27K each standard span
  is split into ``_part1`` (the first ``ceil(users / 2)`` users) and ``_part2``, and the statistic
  features into three video-id ranges. Videos are ``0..items-1`` and users ``0..users-1``.
* **Statistic features** are platform-wide counts: ``show_cnt ~ platform_scale * (expected exposures of
  the video in the standard log) * lognormal noise``, every other count derived from it with
  consistent ratios (``*_user_num <= *_cnt``, ``play_cnt <= show_cnt``, ...).

Generation runs in chunks of users (about ``chunk_rows`` rows each) appended to the open files, so
memory does not grow with the number of rows; per-chunk work is vectorised numpy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from recsys.data import schemas

from . import latent as L
from .latent import LatentConfig

#: The last date of every KuaiRand log.
LAST_DATE = date(2022, 5, 8)
#: Dates up to this one go to the 4_08_to_4_21 standard log.
STANDARD_SPLIT_DATE = 20220421
#: The random logs start on this date.
RANDOM_FIRST_DATE = 20220422
MAX_DAYS = 30
#: Items per generation block of the feature files (part of the random stream).
ITEM_CHUNK = 1 << 20
#: Default ``late_volume``: Pure from its real file sizes; unknown for 1K/27K (uniform).
DEFAULT_LATE_VOLUME = {"pure": (295_497 / 17) / (1_141_112 / 13), "1k": 1.0, "27k": 1.0}
#: Standard-log rows per user per day of the real releases (their duplicates excluded).
DEFAULT_ROWS_PER_USER_DAY = {
    name: rel.standard_rows / rel.users / 30 / (1 + 15_609 / 1_141_112)
    for name, rel in schemas.KUAIRAND_RELEASES.items()
}
_UTC8 = timezone(timedelta(hours=8))
HOUR_MS = 3_600_000

# UTC+8 hourly activity profile (night trough, evening peak).
_HOUR_WEIGHTS = np.array(
    [3.0, 2.0, 1.2, 0.8, 0.6, 0.6, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5,
     5.0, 5.0, 4.5, 4.5, 4.5, 5.0, 5.5, 6.5, 7.5, 8.0, 7.0, 5.0]
)
_TAB_WEIGHTS = np.array([12, 55, 8, 3, 10, 2, 3, 1, 2, 1, 1, 0.5, 0.5, 0.5, 0.5])

# ---- user feature tables (marginals of the real user_features_pure.csv) --------------------------------
_DEGREES = ("full_active", "high_active", "middle_active", "2_14_day_new", "low_active", "single_low_active",
            "30day_retention", "day_new", "UNKNOWN")
# (lower edges, labels) of the range columns, exactly as the real file writes them
_FOLLOW_BINS = ([0, 1, 11, 51, 101, 151, 251, 501],
                ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"])
_FANS_BINS = ([0, 1, 10, 100, 1_000, 5_000, 10_000, 100_000, 1_000_000],
              ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)", "[10w,100w)", "[100w,1000w)"])
_FRIEND_BINS = ([0, 1, 5, 30, 60, 120, 250], ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"])
_REGISTER_BINS = ([0, 15, 31, 61, 91, 181, 366, 731],
                  ["8-14", "15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"])
# activity_z thresholds (from the bottom) of the activity-ranked degrees, from the real shares of
# full 17959, high 6158, middle 2133, low 300, single_low 68 (the new-user classes are drawn apart).
_DEGREE_Z = [(code, NormalDist().inv_cdf(q)) for code, q in (
    (1, (6158 + 2133 + 300 + 68) / 26618), (2, (2133 + 300 + 68) / 26618), (4, (300 + 68) / 26618), (5, 68 / 26618))]
_REGISTER_SHARES = [1, 145, 381, 394, 1048, 1778, 3475, 20063]
_REGISTER_SPAN = [(8, 14), (15, 30), (31, 60), (61, 90), (91, 180), (181, 365), (366, 730), (731, 3624)]
_FEAT1 = [848, 6006, 5096, 3432, 7221, 2759, 1923]
_FEAT4 = [3039, 10083, 5061, 3184, 2021, 1062, 862, 379, 401, 270, 9, 16, 14, 8, 2]
_FEAT6 = [14731, 12395, 159]
_FEAT9 = [260, 6082, 1427, 6233, 3177, 4019, 6087]
_FEAT10 = [4308, 36, 7973, 10904, 4064]
_FEAT11 = [20333, 264, 6685, 2, 1]
_FEAT12_17_ONE = [19234 / 26571, 1812 / 26571, 3165 / 26571, 603 / 26571, 1073 / 26571, 385 / 26571]
_FEAT2_TOP = {2: 6877, 19: 5525, 29: 5410, 10: 5097, 31: 1632, 28: 816, 9: 762, 48: 309, 33: 143, 24: 100, 11: 86,
              22: 79, 34: 64, 20: 57, 30: 42, 15: 35, 18: 22, 16: 21, 49: 19, 3: 18}

# ---- video feature tables (marginals of the real video_features_basic_pure.csv) ------------------------
_UPLOAD_TYPES = {"LongImport": 2925, "Web": 2416, "ShortImport": 917, "Kmovie": 879, "LongPicture": 143, "UNKNOWN": 80,
                 "PictureSet": 73, "LongCamera": 64, "ShortCamera": 43, "ShareFromOtherApp": 29, "FollowShoot": 10,
                 "AiCutVideo": 2, "PhotoCopy": 1, "LipsSync": 1}
_UPLOAD_DATES = {"2022-04-09": 2832, "2022-04-10": 3424, "2022-04-11": 1327}
_SCREENS = [(720, 1280, 0.60), (1280, 720, 0.17), (720, 1440, 0.03), (960, 1280, 0.025), (1080, 1920, 0.02),
            (720, 960, 0.02), (1080, 1282, 0.015), (540, 960, 0.015), (1440, 1080, 0.01), (576, 1024, 0.01),
            (1024, 1556, 0.01), (810, 1440, 0.01), (1280, 1024, 0.01), (664, 1170, 0.005), (1600, 1200, 0.005),
            (1106, 2400, 0.005)]
_MUSIC_TYPES = {9.0: 6665, 4.0: 657, 8.0: 41, 7.0: 14, 11.0: 3}
#: Primary tag of each topic (the real tag ids by frequency) and the secondary-tag pool.
_TOPIC_TAGS = [39, 3, 20, 12, 9, 6, 7, 2, 1, 15, 17, 11, 4, 8, 28, 25, 5, 18, 19, 10, 26, 42, 27, 38, 36, 14, 24, 21,
               34, 22, 29, 13]
_SECOND_TAGS = [68, 43, 62, 67, 60, 65, 54, 56, 40, 37, 35, 30, 16, 23]


@dataclass(frozen=True)
class KuaiRandSynthConfig(LatentConfig):
    """Configuration of a synthetic KuaiRand release (see the module docstring for the process).

    ``users``/``items``/``rows_per_user_day`` left as ``None`` take the published size of ``release``.
    """

    #: ``pure``, ``1k`` or ``27k`` (the file names and default sizes of that release).
    release: str = "pure"
    #: Users ``0..users-1`` (default: the release's 27,285 / 1,000 / 27,285).
    users: int | None = None
    #: Videos ``0..items-1`` (default: 7,551 / 4,369,953 / 32,038,725).
    items: int | None = None
    #: Number of days, 1..30: the last ``days`` days ending 20220508.
    days: int = 30
    #: Expected standard-log rows per user per day before duplicates (default: the release's
    #: 1.731 / 385.2 / 388.4, i.e. the real row counts). Rows scale as ``users * days * rows_per_user_day``
    #: (see ``late_volume`` and :meth:`expected_rows`).
    rows_per_user_day: float | None = None
    #: Standard-log volume per day on dates >= 20220422 relative to earlier dates (default: Pure 0.198,
    #: from the real 1,141,112 rows in 13 days vs 295,497 in 17 days; 1K/27K 1.0). ``rows_per_user_day``
    #: stays the mean over the 30 real days (see :meth:`expected_rows`).
    late_volume: float | None = None
    #: Expected random-log rows per user per day, on dates >= 20220422 (real Pure: 2.56).
    random_rows_per_user_day: float = 2.56
    #: Probabilities of 1..6 videos per request (videos of a request share ``time_ms``).
    request_size_probs: tuple[float, ...] = (0.35, 0.2, 0.15, 0.12, 0.1, 0.08)
    #: Multiplier of the affinity in every action logit.
    affinity_scale: float = 4.0
    #: Action logit biases, calibrated so the standard log's positive rates are near the real Pure ones
    #: (click 46%, long_view 33%, like 1.8%, comment 0.25%, follow 0.11%, forward 0.10%, hate 0.05%).
    click_bias: float = -1.2
    long_view_bias: float = -0.31
    like_bias: float = -6.35
    follow_bias: float = -9.69
    comment_bias: float = -8.82
    forward_bias: float = -9.78
    hate_bias: float = -6.54
    profile_enter_bias: float = -6.06
    #: Fraction of rows written as an adjacent exact copy (real Pure 4_08-4_21: 15,609 / 1,141,112).
    duplicate_rate: float = 0.0137
    #: Fraction of rows with ``duration_ms = 0`` (missing).
    missing_duration_rate: float = 0.025
    #: Fraction of rows whose ``hourmin`` is one hour after the UTC+8 hour of ``time_ms``.
    hourmin_lag_rate: float = 0.3
    #: Statistic features: platform-wide counts per expected exposure in the synthetic standard log.
    platform_scale: float = 20.0
    #: Target rows per generation chunk (part of the random stream; bounds memory).
    chunk_rows: int = 1_000_000
    #: Strength of a planted *click-bait* conflict between the click and the later actions: a user-video
    #: appeal ``a = <p_u, q_i> / 2`` (4-d standard normal vectors of the user and the video, unit variance,
    #: independent of the topic affinity) adds ``bait_strength * a`` to the click logit and subtracts it from
    #: the long-view, like and deep-action logits: what draws a click disappoints after it. Tasks that share
    #: the affinity and pull apart on the appeal (PLE's "complex task correlation", Tang et al. 2020, Sec. 1)
    #: are what task-specific experts are for. 0 (the default) turns it off and leaves every draw unchanged.
    bait_strength: float = 0.0

    def __post_init__(self) -> None:
        if self.release not in schemas.KUAIRAND_RELEASES:
            raise ValueError(f"release must be one of {sorted(schemas.KUAIRAND_RELEASES)}, got {self.release!r}")
        rel = schemas.KUAIRAND_RELEASES[self.release]
        if self.users is None:
            object.__setattr__(self, "users", rel.users)
        if self.items is None:
            object.__setattr__(self, "items", rel.items)
        if self.rows_per_user_day is None:
            object.__setattr__(self, "rows_per_user_day", DEFAULT_ROWS_PER_USER_DAY[self.release])
        if self.late_volume is None:
            object.__setattr__(self, "late_volume", DEFAULT_LATE_VOLUME[self.release])
        object.__setattr__(self, "request_size_probs", tuple(float(p) for p in self.request_size_probs))
        self._check_latent()
        if not 1 <= int(self.days) <= MAX_DAYS:
            raise ValueError(f"days must be in 1..{MAX_DAYS}, got {self.days}")
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.items < self.dim:
            raise ValueError(f"items must be >= dim ({self.dim}), got {self.items}")
        if self.rows_per_user_day < 0 or self.random_rows_per_user_day < 0 or self.late_volume < 0:
            raise ValueError("rows per user per day and late_volume must be >= 0")
        probs = self.request_size_probs
        if not 1 <= len(probs) <= 6 or min(probs) < 0 or sum(probs) <= 0:
            raise ValueError("request_size_probs: 1..6 non-negative probabilities")
        if self.bait_strength < 0:
            raise ValueError("bait_strength must be >= 0")
        for name in ("duplicate_rate", "missing_duration_rate", "hourmin_lag_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")

    def standard_day_rates(self) -> np.ndarray:
        """Expected standard-log rows per user on each day index (before duplicates)."""
        dates = kuairand_dates(self.days)
        late = dates >= RANDOM_FIRST_DATE
        c = MAX_DAYS / (13 + 17 * self.late_volume) if self.late_volume != 1.0 else 1.0
        return self.rows_per_user_day * c * np.where(late, self.late_volume, 1.0)

    def expected_rows(self) -> dict[str, float]:
        """Expected rows of the standard logs (all spans together) and of the random log."""
        rand_days = int((kuairand_dates(self.days) >= RANDOM_FIRST_DATE).sum())
        dup = 1.0 + self.duplicate_rate
        return {
            "standard": self.users * float(self.standard_day_rates().sum()) * dup,
            "random": self.users * rand_days * self.random_rows_per_user_day * dup,
        }

    @property
    def release_files(self) -> schemas.KuaiRandRelease:
        return schemas.KUAIRAND_RELEASES[self.release]


# ---------------------------------------------------------------------------------------------------------
# The world: dates, topics, items
# ---------------------------------------------------------------------------------------------------------


def kuairand_dates(days: int) -> np.ndarray:
    """``(days,)`` int64 yyyymmdd: the last ``days`` days ending 20220508."""
    first = LAST_DATE - timedelta(days=days - 1)
    return np.array([int((first + timedelta(days=d)).strftime("%Y%m%d")) for d in range(days)], dtype=np.int64)


def _day_start_ms(dates: np.ndarray) -> np.ndarray:
    out = []
    for d in dates.tolist():
        y, m, dd = d // 10000, d // 100 % 100, d % 100
        out.append(int(datetime(y, m, dd, tzinfo=_UTC8).timestamp() * 1000))
    return np.array(out, dtype=np.int64)


class _World:
    """Everything shared by users: dates, centroids, videos (topics, authors, durations, popularity)."""

    def __init__(self, cfg: KuaiRandSynthConfig):
        self.cfg = cfg
        self.dates = kuairand_dates(cfg.days)
        self.day_ms = _day_start_ms(self.dates)
        self.active = L.dormant_active(cfg, cfg.days)
        self.centroids = L.topic_centroids(cfg.seed, cfg.dim)
        self.n_prolific = max(1, cfg.items // 40)
        self.n_pool = 3 * cfg.items
        self.n_authors = self.n_prolific + self.n_pool
        self._k_author = L.hash_key(cfg.seed, 101)
        self._k_prolific = L.hash_key(cfg.seed, 106)
        self._k_author_topic = L.hash_key(cfg.seed, 102)
        self._k_follow = L.hash_key(cfg.seed, 103)
        self._k_topic = L.hash_key(cfg.seed, 104)
        self._k_duration = L.hash_key(cfg.seed, 105)
        topics = np.empty(cfg.items, dtype=np.int16)
        for a in range(0, cfg.items, ITEM_CHUNK):
            ids = np.arange(a, min(a + ITEM_CHUNK, cfg.items))
            topics[a : a + ids.size] = self._raw_topic(ids)
        topics = L.ensure_all_topics(topics, cfg.dim, L.make_rng(cfg.seed, L.S_ITEMS))
        self.space = L.ItemSpace(cfg, topics, self.centroids)
        self.weight_sum = float(self.space.weight.sum())
        bits = max(24, int(math.ceil(math.log2(max(self.n_authors, 2) * 2.0))))
        self.author_bits = bits

    def author_index(self, ids: np.ndarray) -> np.ndarray:
        """5% of the videos come from ``items // 40`` prolific authors (power law), the rest from a pool of
        ``3 * items`` authors uniformly (real Pure: 6,510 authors for 7,583 videos, the top one with 26)."""
        u = L.hash_uniform(self._k_author, ids)
        prolific = L.hash_uniform(self._k_prolific, ids) < 0.05
        top = np.minimum((self.n_prolific * u**2).astype(np.int64), self.n_prolific - 1)
        rest = self.n_prolific + np.minimum((self.n_pool * u).astype(np.int64), self.n_pool - 1)
        return np.where(prolific, top, rest)

    def author_id(self, ids: np.ndarray) -> np.ndarray:
        return L.scramble_ids(self.author_index(ids), self.author_bits, 0x5DEECE66D, 0xB5AD4ECE)

    def _raw_topic(self, ids: np.ndarray) -> np.ndarray:
        k = self.cfg.dim
        a_hash = L.splitmix64(self.author_index(ids).astype(np.uint64) ^ self._k_author_topic)
        a_topic = (a_hash % np.uint64(k)).astype(np.int16)
        follow = L.hash_uniform(self._k_follow, ids) < 0.85
        other = np.minimum((L.hash_uniform(self._k_topic, ids) * k).astype(np.int16), k - 1)
        return np.where(follow, a_topic, other).astype(np.int16)

    def duration_ms(self, ids: np.ndarray) -> np.ndarray:
        """True video duration in ms (int64)."""
        z = L.hash_normal(self._k_duration, np.asarray(ids, dtype=np.int64), 1)[:, 0].astype(np.float64)
        return np.clip(np.rint(np.exp(math.log(80_000.0) + 1.0 * z)), 5_000, 1_177_720).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------------


# Logit terms of the feedback chain (module docstring): the style's share in long_view, and the lifts a
# long view and a like give the later actions. One place for both the sampler and the truth's probabilities.
_LONG_VIEW_STYLE = 0.5
_LONG_VIEW_LIFT = 1.5
_LIKE_LIFT = 2.0
#: The deep actions after a click, each with its ``KuaiRandSynthConfig`` bias field (in the sampler's draw order).
_DEEP_ACTIONS = {"is_follow": "follow_bias", "is_comment": "comment_bias", "is_forward": "forward_bias"}


#: Width of the user and video appeal vectors of ``bait_strength``, and their hash streams.
_APPEAL_DIM = 4
_K_USER_APPEAL, _K_VIDEO_APPEAL = 107, 108


def appeal(cfg: KuaiRandSynthConfig, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """The planted click-bait appeal ``<p_u, q_i> / 2`` of each (user, video) pair (unit variance; see
    ``KuaiRandSynthConfig.bait_strength``), a pure function of the seed and the ids."""
    p = L.hash_normal(L.hash_key(cfg.seed, _K_USER_APPEAL), np.asarray(users), _APPEAL_DIM)
    q = L.hash_normal(L.hash_key(cfg.seed, _K_VIDEO_APPEAL), np.asarray(videos), _APPEAL_DIM)
    return 0.5 * np.einsum("ij,ij->i", p, q).astype(np.float64)


def _bait(cfg: KuaiRandSynthConfig, users: np.ndarray, videos: np.ndarray) -> np.ndarray | float:
    """The click-bait logit shift ``bait_strength * appeal`` of each pair (0 without the option: no hashing)."""
    return cfg.bait_strength * appeal(cfg, users, videos) if cfg.bait_strength else 0.0


def _logit_terms(cfg: KuaiRandSynthConfig, aff: np.ndarray, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x = affinity_scale * affinity`` and ``st = style_strength * style`` (float64)."""
    return cfg.affinity_scale * aff.astype(np.float64), cfg.style_strength * style.astype(np.float64)


def feedback_probabilities(cfg: KuaiRandSynthConfig, aff: np.ndarray, style: np.ndarray,
                           bait: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    """Exact marginal probabilities of the binary feedback of one exposure with daily affinity ``aff``
    and action style ``style`` (the user's on the video's topic): what :func:`_feedback` samples, with
    ``long_view`` and ``like`` summed out of the deep actions. Keys are the log's columns
    (``is_click``, ``long_view``, ``is_like``, ``is_follow``, ``is_comment``, ``is_forward``); ``bait`` is
    ``bait_strength`` times the pair's :func:`appeal`."""
    x, st = _logit_terms(cfg, aff, style)
    keep = L.rare_logit_correction(cfg.style_strength)
    click = L.sigmoid(cfg.click_bias + x + bait)
    x_after = x - bait  # what draws the click disappoints after it (bait_strength)
    lv = L.sigmoid(cfg.long_view_bias + x_after + _LONG_VIEW_STYLE * st)
    out = {"is_click": click, "long_view": click * lv, "is_like": np.zeros_like(x),
           **{a: np.zeros_like(x) for a in _DEEP_ACTIONS}}
    for long_view, p_lv in ((1.0, lv), (0.0, 1.0 - lv)):
        p_like = L.sigmoid(cfg.like_bias + keep + x_after + st + _LONG_VIEW_LIFT * long_view)
        out["is_like"] += click * p_lv * p_like
        for liked, p_l in ((1.0, p_like), (0.0, 1.0 - p_like)):
            deep = x_after + st + keep + _LONG_VIEW_LIFT * long_view + _LIKE_LIFT * liked
            for action, bias in _DEEP_ACTIONS.items():
                out[action] += click * p_lv * p_l * L.sigmoid(getattr(cfg, bias) + deep)
    return out


def _feedback(
    cfg: KuaiRandSynthConfig, rng: np.random.Generator, aff: np.ndarray, dur: np.ndarray, style: np.ndarray,
    bait: np.ndarray | float = 0.0,
) -> dict[str, np.ndarray]:
    n = aff.size
    # x: the affinity; st: the user's engagement style on the video's topic (more deep actions and longer
    # plays when > 0)
    x, st = _logit_terms(cfg, aff, style)
    keep = L.rare_logit_correction(cfg.style_strength)
    r = rng.random((10, n))
    click = r[0] < L.sigmoid(cfg.click_bias + x + bait)
    x_after = x - bait  # what draws the click disappoints after it (bait_strength)
    lv = click & (r[1] < L.sigmoid(cfg.long_view_bias + x_after + _LONG_VIEW_STYLE * st))
    like = click & (r[2] < L.sigmoid(cfg.like_bias + keep + x_after + st + _LONG_VIEW_LIFT * lv))
    deep = x_after + st + keep + _LONG_VIEW_LIFT * lv + _LIKE_LIFT * like
    deep_actions = {a: click & (r[3 + k] < L.sigmoid(getattr(cfg, bias) + deep))
                    for k, (a, bias) in enumerate(_DEEP_ACTIONS.items())}
    hate = ~like & (r[6] < L.sigmoid(cfg.hate_bias - 2.0 * x))
    profile = click & (r[7] < L.sigmoid(cfg.profile_enter_bias + x + 3.0 * deep_actions["is_follow"]))

    # play time consistent with long_view: long views play at least min(duration, 18 s)
    thresh = np.minimum(dur, 18_000).astype(np.float64)
    f = rng.random((4, n))
    loops = np.where(f[0] < 0.12, 1.0 + 2.0 * f[1], 1.0)
    full = np.maximum(dur * loops, thresh)
    long_play = thresh + (full - thresh) * f[2] ** (0.5 * np.exp(-0.5 * np.clip(st, -3, 3)))
    short_play = thresh * (0.05 + 0.9 * f[2])
    preview = np.where(f[3] < 0.5, 0.0, np.minimum(thresh, 3_000.0) * f[2])
    play = np.where(lv, long_play, np.where(click, short_play, preview))
    play = np.minimum(np.floor(play), 1_020_000).astype(np.int64)

    g = rng.standard_normal((2, n))
    comment_open = deep_actions["is_comment"] | (click & (r[8] < 0.04))
    comment_stay = np.where(comment_open, np.minimum(np.rint(np.exp(math.log(15_000) + 1.3 * g[0])), 300_000), 0)
    profile_stay = np.where(profile, np.minimum(np.rint(np.exp(math.log(12_000) + 1.3 * g[1])), 300_000), 0)
    return {
        "is_click": click, "is_like": like, **deep_actions, "is_hate": hate, "long_view": lv, "play_time_ms": play,
        "profile_stay_time": profile_stay, "comment_stay_time": comment_stay, "is_profile_enter": profile,
    }


def _distinct_in_request(item: np.ndarray, topic: np.ndarray, req: np.ndarray, space: L.ItemSpace, rng) -> None:
    """Redraw (in place, same topic) videos repeated inside one request; a few tries, vectorised."""
    if item.size == 0:
        return
    start = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
    pos = np.arange(req.size) - np.repeat(start, np.diff(np.r_[start, req.size]))
    for j in range(1, int(pos.max()) + 1):
        rows = np.flatnonzero(pos == j)
        for _ in range(4):
            clash = np.zeros(rows.size, dtype=bool)
            for k in range(1, j + 1):
                clash |= item[rows] == item[rows - k]
            if not clash.any():
                break
            redo = rows[clash]
            item[redo] = space.sample_in_topic(topic[redo], rng.random(redo.size))


def _log_chunk(
    world: _World, lat: dict[str, np.ndarray], lo: int, rng: np.random.Generator, *, is_rand: bool
) -> dict[str, np.ndarray]:
    """Rows of users ``[lo, lo + n)`` for the standard (``is_rand=False``) or random log, sorted."""
    cfg = world.cfg
    n, days = lat["base"].shape[0], cfg.days
    if is_rand:
        sizes = np.array([1.0])
        day_rate = np.where(world.dates >= RANDOM_FIRST_DATE, cfg.random_rows_per_user_day, 0.0)
    else:
        sizes = np.array(cfg.request_size_probs) / sum(cfg.request_size_probs)
        day_rate = cfg.standard_day_rates()
    mean_size = float((np.arange(1, sizes.size + 1) * sizes).sum())
    lam = lat["activity"][:, None] * (day_rate / mean_size)[None, :]
    counts = rng.poisson(lam).ravel()
    cell = np.repeat(np.arange(n * days, dtype=np.int64), counts)
    nreq = cell.size
    ru, rt = cell // days, cell % days
    hour = np.searchsorted(np.cumsum(_HOUR_WEIGHTS) / _HOUR_WEIGHTS.sum(), rng.random(nreq), side="right")
    hour = np.minimum(hour, 23)
    rtime = world.day_ms[rt] + hour * HOUR_MS + rng.integers(0, HOUR_MS, nreq)
    order = np.lexsort((rtime, ru))
    ru, rt, rtime, hour = ru[order], rt[order], rtime[order], hour[order]
    lag = (rng.random(nreq) < cfg.hourmin_lag_rate) & (hour < 23)
    hourmin = (hour + lag) * 100
    tab = np.minimum(np.searchsorted(np.cumsum(_TAB_WEIGHTS) / _TAB_WEIGHTS.sum(), rng.random(nreq), side="right"), 14)
    if sizes.size == 1:
        req = np.arange(nreq)
    else:
        size = 1 + np.minimum(np.searchsorted(np.cumsum(sizes), rng.random(nreq), side="right"), sizes.size - 1)
        req = np.repeat(np.arange(nreq), size)
    u, t = ru[req], rt[req]
    nrows = req.size
    p = L.topic_probs_at(cfg, lat, world.active, u, t)
    space = world.space
    if is_rand:
        item = rng.integers(0, cfg.items, nrows)
    else:
        topic = L.sample_exposure_topics(p, space.topic_mass, rng.random(nrows))
        item = space.sample_in_topic(topic, rng.random(nrows))
        _distinct_in_request(item, topic, req, space, rng)
    if space.tabulated:
        vec, dur = space.vectors(item), world.duration_ms(item)
    else:  # computed on demand: once per distinct video of the chunk
        uniq, inv = np.unique(item, return_inverse=True)
        vec, dur = space.vectors(uniq)[inv], world.duration_ms(uniq)[inv]
    aff = L.affinity(p @ world.centroids, vec)
    fb = _feedback(cfg, rng, aff, dur, lat["style"][u, space.topics[item]], _bait(cfg, u + lo, item))
    duration = np.where(rng.random(nrows) < cfg.missing_duration_rate, 0, dur)
    cols = {
        "user_id": u + lo, "video_id": item, "date": world.dates[t], "hourmin": hourmin[req], "time_ms": rtime[req],
        **{k: fb[k] for k in ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate", "long_view",
                              "play_time_ms")},
        "duration_ms": duration, "profile_stay_time": fb["profile_stay_time"],
        "comment_stay_time": fb["comment_stay_time"], "is_profile_enter": fb["is_profile_enter"],
        "is_rand": np.full(nrows, int(is_rand)), "tab": tab[req],
    }
    # exact duplicate rows: an adjacent copy
    dup = np.repeat(np.arange(nrows), 1 + (rng.random(nrows) < cfg.duplicate_rate))
    return {k: np.ascontiguousarray(v[dup]).astype(np.int64, copy=False) for k, v in cols.items()}


def _frame(cols: dict[str, np.ndarray], schema: schemas.Schema, mask: np.ndarray | None = None) -> pl.DataFrame:
    data = {k: (cols[k] if mask is None else cols[k][mask]) for k in schema}
    return pl.DataFrame(data, schema=schema)


class CsvSink:
    """An open CSV file with its header written; frames are appended with polars' ``write_csv``."""

    def __init__(self, path: Path, schema: schemas.Schema, **write_options):
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._opts = write_options
        self._fh = open(self.path, "wb")
        self._fh.write((schemas.csv_header(schema) + "\n").encode())

    def write(self, df: pl.DataFrame) -> None:
        if df.height:
            df.write_csv(self._fh, include_header=False, **self._opts)
            self.rows += df.height

    def close(self) -> None:
        self._fh.close()


# ---------------------------------------------------------------------------------------------------------
# Feature files
# ---------------------------------------------------------------------------------------------------------


def _draw(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(np.cumsum(w) / w.sum(), rng.random(n), side="right"), w.size - 1)


def _draw_u(u: np.ndarray, weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(np.cumsum(w) / w.sum(), u, side="right"), w.size - 1)


def _pick(rng: np.random.Generator, table: dict[str, int], n: int) -> pl.Series:
    """``n`` strings drawn with the weights of ``table`` (label -> count)."""
    return pl.Series(list(table), dtype=pl.String).gather(_draw(rng, list(table.values()), n))


def _bin_labels(values: np.ndarray, bins) -> pl.Series:
    edges, labels = bins
    idx = np.searchsorted(np.asarray(edges), values, side="right") - 1
    return pl.Series(labels, dtype=pl.String).gather(np.maximum(idx, 0))


def _user_feature_tables(seed: int) -> dict[str, np.ndarray]:
    rng = L.make_rng(seed, L.S_TABLES, 1)
    feat2 = np.full(50, 4.0)
    for k, v in _FEAT2_TOP.items():
        feat2[k] = v
    out = {"feat2": feat2}
    for name, size, a in (("feat3", 1471, 0.9), ("feat7", 118, 0.7), ("feat8", 454, 0.3)):
        w = np.arange(1, size + 1, dtype=np.float64) ** -a
        out[name] = w[rng.permutation(size)]
    return out


def _user_features(cfg: KuaiRandSynthConfig, lat: dict[str, np.ndarray], lo: int, hi: int, tables) -> pl.DataFrame:
    n = hi - lo

    def make(rng: np.random.Generator, m: int) -> dict[str, np.ndarray]:
        return {"u": rng.random((m, 20)), "z": rng.standard_normal((m, 4)),
                "c": np.stack([_draw(rng, w, m) for w in (_FEAT1, _FEAT4, _FEAT6, _FEAT9, _FEAT10, _FEAT11,
                                                           tables["feat2"], tables["feat3"], tables["feat7"],
                                                           tables["feat8"])], axis=1)}

    d = L.per_user_blocks(cfg.seed, L.S_USER_FEATURES, lo, hi, make)
    u, z, c = d["u"], d["z"], d["c"]
    # activity degree: by the activity quantile (the real shares), plus the new-user classes at random
    az = lat["activity_z"]
    deg = np.zeros(n, dtype=np.int64)
    for code, z_max in _DEGREE_Z:
        deg[az < z_max] = code
    newc = u[:, 0]
    deg = np.where(newc < 0.0244, 3, deg)
    deg = np.where(newc < 0.00117, 6, deg)
    deg = np.where(newc < 0.00062, 7, deg)
    deg = np.where(newc < 0.00022, 8, deg)
    follow = np.clip(np.rint(np.exp(math.log(155) + 1.6 * z[:, 0])), 1, 5003)
    follow = np.where(u[:, 1] < 0.007, 0, follow).astype(np.int64)
    fans = np.clip(np.floor(np.exp(math.log(48) + 2.0 * z[:, 1])), 0, 9_999_999).astype(np.int64)
    friend = np.clip(np.floor(np.exp(math.log(16) + 2.46 * z[:, 2])), 0, 4995).astype(np.int64)
    # register days: a range by the real shares, then a value inside it (730+: lognormal tail)
    rb = _draw_u(u[:, 16], _REGISTER_SHARES)
    lo_, hi_ = np.array(_REGISTER_SPAN)[rb].T
    reg = (lo_ + np.floor(u[:, 17] * (hi_ - lo_ + 1))).astype(np.int64)
    tail = np.clip(np.rint(np.exp(math.log(1350) + 0.4 * z[:, 3])), 731, 3624).astype(np.int64)
    reg = np.where(rb == len(_REGISTER_SPAN) - 1, tail, reg)
    reg = np.where(deg == 3, 14 + (u[:, 2] * 47).astype(np.int64), reg)
    reg = np.where(deg == 6, 30 + (u[:, 2] * 60).astype(np.int64), reg)
    reg = np.where(deg == 7, 8 + (u[:, 2] * 13).astype(np.int64), reg)
    f4 = c[:, 1].astype(np.float64)
    f4[u[:, 3] < 0.032] = np.nan
    miss12 = u[:, 4] < 0.026
    cols: dict[str, pl.Series | np.ndarray] = {
        "user_id": np.arange(lo, hi, dtype=np.int64),
        "user_active_degree": pl.Series(_DEGREES, dtype=pl.String).gather(deg),
        "is_lowactive_period": np.zeros(n, dtype=np.int64),
        "is_live_streamer": np.where(u[:, 5] < 0.2257, 1, schemas.KUAIRAND_SENTINEL).astype(np.int64),
        "is_video_author": (u[:, 6] < 0.8164).astype(np.int64),
        "follow_user_num": follow, "follow_user_num_range": _bin_labels(follow, _FOLLOW_BINS),
        "fans_user_num": fans, "fans_user_num_range": _bin_labels(fans, _FANS_BINS),
        "friend_user_num": friend, "friend_user_num_range": _bin_labels(friend, _FRIEND_BINS),
        "register_days": reg, "register_days_range": _bin_labels(reg, _REGISTER_BINS),
        "onehot_feat0": (u[:, 7] < 0.5631).astype(np.int64),
        "onehot_feat1": c[:, 0], "onehot_feat2": c[:, 6], "onehot_feat3": c[:, 7], "onehot_feat4": f4,
        "onehot_feat5": np.where(u[:, 8] < 0.9942, 0, 1 + (u[:, 9] * 33).astype(np.int64)),
        "onehot_feat6": c[:, 2], "onehot_feat7": c[:, 8], "onehot_feat8": c[:, 9], "onehot_feat9": c[:, 3],
        "onehot_feat10": c[:, 4], "onehot_feat11": c[:, 5],
    }
    for j, p1 in enumerate(_FEAT12_17_ONE):
        v = (u[:, 10 + j] < p1).astype(np.float64)
        v[miss12] = np.nan
        cols[f"onehot_feat{12 + j}"] = v
    series = []
    for name, dtype in schemas.KUAIRAND_USER_FEATURES.items():
        v = cols[name]
        s = v if isinstance(v, pl.Series) else pl.Series(name, v)
        s = s.alias(name).cast(dtype)
        if dtype == pl.Float64():
            s = s.fill_nan(None)
        series.append(s)
    return pl.DataFrame(series)


def _video_basic(world: _World, a: int, b: int) -> pl.DataFrame:
    cfg = world.cfg
    ids = np.arange(a, b, dtype=np.int64)
    n = ids.size
    rng = L.make_rng(cfg.seed, L.S_ITEM_FEATURES, a // ITEM_CHUNK)
    r = rng.random((10, n))
    vt = np.where(r[0] < 0.0002, 2, np.where(r[0] < 0.0102, 1, 0))
    dur = world.duration_ms(ids).astype(np.float64)
    dur[r[1] < 0.032] = np.nan
    screens = np.array(_SCREENS)
    sc = _draw(rng, screens[:, 2], n)
    n_music = max(1, int(0.95 * cfg.items))
    music_idx = np.minimum((n_music * r[2] ** 1.5).astype(np.int64), n_music - 1)
    no_music = (r[3] < 0.027) | (vt == 1)
    music = np.where(no_music, 0, 4_000_000_000 + L.scramble_ids(music_idx, 32, 0x2545F491, 0x9E37))
    mt = np.array(list(_MUSIC_TYPES))[_draw(rng, list(_MUSIC_TYPES.values()), n)]
    mt = np.where(no_music, np.nan, mt)
    topic = world.space.topics[a:b].astype(np.int64)
    t1 = np.array(_TOPIC_TAGS)[topic]
    t2 = np.array(_SECOND_TAGS)[_draw(rng, np.arange(len(_SECOND_TAGS), 0, -1) ** 2.0, n)]
    t3 = np.array(_SECOND_TAGS)[_draw(rng, np.ones(len(_SECOND_TAGS)), n)]
    has2, has3 = r[4] < 0.232, r[5] < 0.004
    t3 = np.where(t3 == t2, t1, t3)
    tag = pl.DataFrame({"t1": t1, "t2": np.where(has2 | has3, t2, -1), "t3": np.where(has3, t3, -1)}).select(
        pl.concat_str(
            [pl.col("t1").cast(pl.String), pl.when(pl.col("t2") >= 0).then(pl.col("t2").cast(pl.String)),
             pl.when(pl.col("t3") >= 0).then(pl.col("t3").cast(pl.String))],
            separator=",", ignore_nulls=True,
        )
    ).to_series()
    tag = pl.select(pl.when(pl.Series(r[6] < 0.013)).then(None).otherwise(tag)).to_series()
    cols = {
        "video_id": pl.Series(ids),
        "author_id": pl.Series(world.author_id(ids)),
        "video_type": pl.Series(["NORMAL", "AD", "UNKNOWN"], dtype=pl.String).gather(vt),
        "upload_dt": _pick(rng, _UPLOAD_DATES, n),
        "upload_type": _pick(rng, _UPLOAD_TYPES, n),
        "visible_status": pl.Series(np.zeros(n)),
        "video_duration": pl.Series(dur).fill_nan(None),
        "server_width": pl.Series(screens[sc, 0]),
        "server_height": pl.Series(screens[sc, 1]),
        "music_id": pl.Series(music),
        "music_type": pl.Series(mt).fill_nan(None),
        "tag": tag,
    }
    return pl.DataFrame([cols[k].alias(k).cast(t) for k, t in schemas.KUAIRAND_VIDEO_BASIC.items()])


def _video_statistic(world: _World, a: int, b: int, total_rows: float) -> pl.DataFrame:
    cfg = world.cfg
    ids = np.arange(a, b, dtype=np.int64)
    n = ids.size
    rng = L.make_rng(cfg.seed, L.S_ITEM_FEATURES, 10**6 + a // ITEM_CHUNK)
    space = world.space
    share = space.weight[a:b] / world.weight_sum
    dur = world.duration_ms(ids).astype(np.float64)

    def ln(s: float) -> np.ndarray:
        return np.exp(s * rng.standard_normal(n) - 0.5 * s * s)

    def frac(lo_: float, hi_: float) -> np.ndarray:
        return lo_ + (hi_ - lo_) * rng.random(n)

    def rnd(x: np.ndarray) -> np.ndarray:  # whole floats below 1e16 (written like repr: 1234.0)
        return np.floor(np.clip(x, 0.0, 9e15) + 0.5)

    show = rnd(cfg.platform_scale * total_rows * share * ln(0.5) + rng.poisson(3.0, n))
    play = rnd(show * np.clip(0.46 * ln(0.3), 0, 1))
    progress = np.clip(0.55 * ln(0.3), 0.02, 3.0)
    complete_rate = L.sigmoid(1.0 - np.log(dur / 20_000.0))
    like = rnd(play * 0.04 * ln(0.5))
    click_like = rnd(like * frac(0.3, 0.6))
    comment = rnd(play * 0.006 * ln(0.6))
    direct = rnd(comment * frac(0.6, 0.9))
    follow = rnd(play * 0.003 * ln(0.6))
    share_ = rnd(play * 0.002 * ln(0.6))
    share_all = share_ + rnd(share_ * frac(0.0, 0.5))
    cancel_like = rnd(like * 0.02 * frac(0, 1))

    def users(cnt: np.ndarray, lo_: float = 0.7, hi_: float = 0.97) -> np.ndarray:
        return rnd(cnt * frac(lo_, hi_))

    delete_comment = rnd(comment * 0.01 * frac(0, 1))
    comment_like = rnd(comment * 2.0 * ln(0.6))
    cancel_follow = rnd(follow * 0.05 * frac(0, 1))
    download = rnd(play * 0.001 * ln(0.6))
    report = rnd(play * 0.0002 * ln(0.8))
    reduce_similar = rnd(play * 0.002 * ln(0.6))
    collect = rnd(play * 0.003 * ln(0.6))
    cancel_collect = rnd(collect * 0.05 * frac(0, 1))
    complete = rnd(play * complete_rate)
    valid = rnd(play * frac(0.6, 0.9))
    long_time = rnd(play * frac(0.4, 0.7))
    play_users = users(play)
    comment_users = users(comment)
    stats = {
        "show_cnt": show, "show_user_num": users(show, 0.75, 0.98), "play_cnt": play, "play_user_num": play_users,
        "play_duration": rnd(play * dur * progress), "complete_play_cnt": complete,
        "complete_play_user_num": np.minimum(users(complete), play_users),
        "valid_play_cnt": valid, "valid_play_user_num": users(valid), "long_time_play_cnt": long_time,
        "long_time_play_user_num": users(long_time), "short_time_play_cnt": play - valid,
        "short_time_play_user_num": users(play - valid), "play_progress": np.round(progress, 4),
        "comment_stay_duration": rnd(comment * 8 * 15_000.0 * ln(0.5)), "like_cnt": like,
        "like_user_num": users(like, 0.9, 1.0), "click_like_cnt": click_like, "double_click_cnt": like - click_like,
        "cancel_like_cnt": cancel_like, "cancel_like_user_num": users(cancel_like, 0.8, 1.0), "comment_cnt": comment,
        "comment_user_num": comment_users, "direct_comment_cnt": direct, "reply_comment_cnt": comment - direct,
        "delete_comment_cnt": delete_comment, "delete_comment_user_num": users(delete_comment, 0.8, 1.0),
        "comment_like_cnt": comment_like, "comment_like_user_num": users(comment_like, 0.5, 0.9),
        "follow_cnt": follow, "follow_user_num": users(follow, 0.95, 1.0),
        "cancel_follow_cnt": cancel_follow, "cancel_follow_user_num": users(cancel_follow, 0.9, 1.0),
        "share_cnt": share_, "share_user_num": users(share_),
        "download_cnt": download, "download_user_num": users(download, 0.8, 1.0),
        "report_cnt": report, "report_user_num": users(report, 0.8, 1.0),
        "reduce_similar_cnt": reduce_similar, "reduce_similar_user_num": users(reduce_similar, 0.8, 1.0),
        "collect_cnt": collect, "collect_user_num": users(collect, 0.85, 1.0),
        "cancel_collect_cnt": cancel_collect, "cancel_collect_user_num": users(cancel_collect, 0.85, 1.0),
        "direct_comment_user_num": np.minimum(users(direct), comment_users),
        "reply_comment_user_num": np.minimum(users(comment - direct), comment_users),
        "share_all_cnt": share_all, "share_all_user_num": users(share_all),
        "outsite_share_all_cnt": rnd(share_all * frac(0.1, 0.5)),
    }
    counts = np.clip(30 - rng.geometric(0.5, n) + 1, 1, 30).astype(np.int64)
    data = {"video_id": ids, "counts": counts, **stats}
    return pl.DataFrame(data, schema=schemas.KUAIRAND_VIDEO_STATISTIC)


# ---------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------


def user_chunks(cfg: KuaiRandSynthConfig) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` user ranges of the generation chunks (part of the random stream)."""
    per_user = sum(cfg.expected_rows().values()) / cfg.users
    step = int(max(1, min(cfg.users, cfg.chunk_rows // max(per_user, 1.0))))
    return [(lo, min(lo + step, cfg.users)) for lo in range(0, cfg.users, step)]


def write_kuairand(cfg: KuaiRandSynthConfig, directory: str | Path, progress=None) -> dict[str, int]:
    """Write every file of the release into an existing ``directory``; returns ``{file name: data rows}``.

    Use :func:`recsys.data.synth.synthesize` for atomic output (temporary sibling folder + rename).
    """
    directory = Path(directory)
    rel = cfg.release_files
    world = _World(cfg)
    log_schema = schemas.KUAIRAND_LOG
    sinks: dict[str, CsvSink] = {}
    try:
        for name in rel.logs:
            sinks[name] = CsvSink(directory / name, log_schema)
        sinks[rel.user_features] = CsvSink(directory / rel.user_features, schemas.KUAIRAND_USER_FEATURES)
        std = rel.standard_logs
        half = (cfg.users + 1) // 2
        tables = _user_feature_tables(cfg.seed)
        t0 = time.perf_counter()
        for ci, (lo, hi) in enumerate(user_chunks(cfg)):
            lat = L.user_latents(cfg, cfg.days, lo, hi)
            lat["style"] = L.user_styles(cfg, lo, hi)
            for is_rand in (False, True):
                stream = L.S_RANDOM_LOG if is_rand else L.S_EVENTS
                cols = _log_chunk(world, lat, lo, L.make_rng(cfg.seed, stream, ci), is_rand=is_rand)
                if is_rand:
                    sinks[rel.random_logs[0]].write(_frame(cols, log_schema))
                    continue
                early = cols["date"] <= STANDARD_SPLIT_DATE
                if len(std) == 2:
                    sinks[std[0]].write(_frame(cols, log_schema, early))
                    sinks[std[1]].write(_frame(cols, log_schema, ~early))
                else:  # 27k: span x user half
                    first = cols["user_id"] < half
                    sinks[std[0]].write(_frame(cols, log_schema, early & first))
                    sinks[std[1]].write(_frame(cols, log_schema, early & ~first))
                    sinks[std[2]].write(_frame(cols, log_schema, ~early & first))
                    sinks[std[3]].write(_frame(cols, log_schema, ~early & ~first))
            sinks[rel.user_features].write(_user_features(cfg, lat, lo, hi, tables))
            if progress is not None:
                progress(f"kuairand users {hi}/{cfg.users} ({time.perf_counter() - t0:.1f}s)")
        # video features
        basic = CsvSink(directory / rel.video_basic[0], schemas.KUAIRAND_VIDEO_BASIC)
        sinks[rel.video_basic[0]] = basic
        parts = rel.video_statistic
        bounds = [cfg.items * j // len(parts) for j in range(len(parts) + 1)]
        for name in parts:
            sinks[name] = CsvSink(directory / name, schemas.KUAIRAND_VIDEO_STATISTIC)
        total_rows = cfg.expected_rows()["standard"]
        for a in range(0, cfg.items, ITEM_CHUNK):
            b = min(a + ITEM_CHUNK, cfg.items)
            basic.write(_video_basic(world, a, b))
            stat = _video_statistic(world, a, b, total_rows)
            for j, name in enumerate(parts):
                lo_, hi_ = max(bounds[j], a), min(bounds[j + 1], b)
                if hi_ > lo_:
                    sinks[name].write(stat.slice(lo_ - a, hi_ - lo_))
    finally:
        for s in sinks.values():
            s.close()
    return {name: sinks[name].rows for name in rel.files}


# ---------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------


@dataclass
class KuaiRandTruth:
    """Planted ground truth of a synthetic KuaiRand config (arrays indexed by the raw ids/day index).

    Day index ``d`` is the date ``dates[d]``. ``daily_*`` arrays are ``users x days x ...`` and only
    meant for small configs.
    """

    config: KuaiRandSynthConfig
    #: (days,) yyyymmdd of each day index.
    dates: np.ndarray
    #: (K, dim) orthonormal topic centroids.
    topic_centroids: np.ndarray
    #: (items,) topic of each video.
    item_topic: np.ndarray
    #: (items,) 1-based popularity rank (1 = most exposed).
    item_rank: np.ndarray
    #: (items,) exposure weight ``rank ** -zipf_alpha``.
    item_weight: np.ndarray
    #: (items, dim) unit latent vectors.
    item_factors: np.ndarray
    #: (items,) true duration in ms (the log's ``duration_ms`` where not missing).
    item_duration_ms: np.ndarray
    #: (items,) author id as written in the basic features.
    item_author_id: np.ndarray
    #: (users, dim) long-run taste ``softmax(base logits) @ C`` (no drift, no dormant topic).
    user_factors: np.ndarray
    #: (users,) activity multiplier (mean 1).
    user_activity: np.ndarray
    #: (users,) the dormant long-term topic of each user.
    dormant_topic: np.ndarray
    #: (days,) bool: days where the dormant topic is active (early window and late window).
    dormant_active: np.ndarray
    #: (users, days, K) the daily topic mixture ``P_u,t`` (drift and dormant topic included).
    daily_topic_probs: np.ndarray
    #: (users, days, dim) the daily interest ``P_u,t @ C`` that drives exposure and feedback.
    daily_interest: np.ndarray
    #: (users, K) the action style of each user per topic (see LatentConfig.style_strength).
    user_style: np.ndarray

    def affinity(self, users: np.ndarray, items: np.ndarray, days: np.ndarray | None = None) -> np.ndarray:
        """``<interest, v_item>``: daily interest when ``days`` (day indices) is given, else the long-run taste."""
        users, items = np.asarray(users), np.asarray(items)
        u = self.user_factors[users] if days is None else self.daily_interest[users, np.asarray(days)]
        return np.einsum("ij,ij->i", u, self.item_factors[items])

    def action_probabilities(self, users: np.ndarray, items: np.ndarray, days: np.ndarray) -> dict[str, np.ndarray]:
        """The planted probability of each binary feedback action when ``users`` are shown ``items`` on
        ``days`` (day indices): :func:`feedback_probabilities` of the daily affinity and the user's
        action style on the item's topic. E.g. ``truth.action_probabilities([0], [5], [3])["is_like"]``."""
        users, items = np.asarray(users), np.asarray(items)
        style = self.user_style[users, self.item_topic[items]]
        return feedback_probabilities(self.config, self.affinity(users, items, days), style,
                                      _bait(self.config, users, items))

    def day_index(self, dates: np.ndarray) -> np.ndarray:
        """Day index of yyyymmdd dates."""
        return np.searchsorted(self.dates, np.asarray(dates))

    def day_of_time_ms(self, time_ms: np.ndarray) -> np.ndarray:
        """Day index of the log's ``time_ms`` values (days start at midnight UTC+8, as the log writes them)."""
        return np.searchsorted(_day_start_ms(self.dates), np.asarray(time_ms), side="right") - 1


def kuairand_truth(cfg: KuaiRandSynthConfig) -> KuaiRandTruth:
    """Recompute the planted ground truth of ``cfg`` (no logs are generated)."""
    world = _World(cfg)
    lat = L.user_latents(cfg, cfg.days, 0, cfg.users)
    probs = L.topic_probs_all(cfg, lat, cfg.days)
    ids = np.arange(cfg.items)
    return KuaiRandTruth(
        config=cfg,
        dates=world.dates,
        topic_centroids=world.centroids,
        item_topic=world.space.topics.astype(np.int64),
        item_rank=world.space.rank.astype(np.int64),
        item_weight=world.space.weight,
        item_factors=world.space.vectors(ids),
        item_duration_ms=world.duration_ms(ids),
        item_author_id=world.author_id(ids),
        user_factors=L.taste_vectors(lat, world.centroids),
        user_activity=lat["activity"],
        dormant_topic=lat["dormant"],
        dormant_active=world.active,
        daily_topic_probs=probs,
        daily_interest=(probs @ world.centroids).astype(np.float32),
        user_style=L.user_styles(cfg, 0, cfg.users),
    )
