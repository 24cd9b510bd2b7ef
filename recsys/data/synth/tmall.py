"""Synthetic Tmall IJCAI-15 "Repeat Buyers Prediction" data (``data_format1``) in the exact file format.

Writes ``user_log_format1.csv``, ``user_info_format1.csv``, ``train_format1.csv`` and ``test_format1.csv``
(headers from :mod:`recsys.data.schemas`).

Generative process (on top of :mod:`.latent`)
---------------------------------------------
* **Catalogue.** ``sellers`` sellers, each with one topic, a lognormal size and a latent *retention*
  ``N(0, 1)``; every item belongs to one seller (probability proportional to the size) and takes the
  seller's topic; ``categories`` categories each belong to one topic, an item's category is its seller's
  main category (p=0.7) or another category of the topic; ``brands`` brands each belong to one seller and
  an item takes one of its seller's brands. So each item has exactly one ``cat_id``, ``seller_id`` and
  ``brand_id``. ``missing_brand_rate`` of the rows have no brand (an item-level gap, the most popular 1%
  of items excluded, the rate compensated). Ids are 1-based.
* **Users.** The shared latent taste with drift and a dormant topic; ``gender`` (0 female, 1 male,
  2 unknown) shifts the taste (+0.6 logit on a quarter of the topics per gender); a *loyalty*
  ``~ Beta(loyalty_a, loyalty_b)`` and 1..``favourite_sellers`` favourite sellers (drawn from the user's
  favourite topics by seller size).
* **Days.** The last ``days`` days ending 11-11 (2014), ``time_stamp`` = ``mmdd`` (``829``, or ``0829``
  with ``time_stamp_zero_pad``). 11-11 carries ``double11_boost`` times the usual volume and a higher
  purchase probability; intents started in the two weeks before are often bought on 11-11.
* **Intent chains.** User ``u`` starts ``Poisson(activity_u * rows_per_user_day / ROWS_PER_CHAIN)`` chains
  per day. A chain picks an item: from a favourite seller with probability ``loyal_visit * loyalty_u``,
  else topic ~ ``P_u,t(k) * W_k`` then item ~ popularity. With ``x = affinity_scale * affinity``:
  ``1 + Geometric(extra_clicks)`` clicks on the start day (repeated clicks on one item the same day give
  exact duplicate rows, as in the real log); purchase ``~ sigmoid(purchase_bias + x (+ double11_purchase
  on 11-11) (+0.8 from a favourite seller))`` on the same day (p=0.6) or a few days later (then often a
  revisit click that day); add-to-favourite ``~ sigmoid(favourite_bias + x)`` on the click day or up to
  three days later, never after the purchase; the user's *action style* on the item's topic
  (:attr:`~.latent.LatentConfig.style_strength`, ``s``) adds ``s`` to the purchase logit and ``-s`` to the
  favourite logit, makes a same-day purchase ``sigmoid(0.4 + 1.5 s)`` likely and later purchases slower
  for deliberate users (the rare-action biases are corrected so the mean rates stay); add-to-cart ``~ sigmoid(cart_bias + x)`` between the click
  and the purchase. Actions past 11-11 are dropped. Expected rows are about
  ``users * rows_per_user_day * (days - 1 + double11_boost)``.
* **Order.** Rows of a user are grouped (users in a shuffled order within a chunk) and shuffled within the
  user: the log is not time-ordered, as the real one.
* **Repeat buyers.** Every (user, seller) pair with a purchase on 11-11 is a train row (users with
  ``split == 0``) or a test row (``prob`` empty). The label is 1 with probability
  ``sigmoid(repeat_bias + repeat_loyalty * loyalty_u + repeat_favourite * [seller is a favourite of u]
  + repeat_retention * retention_s)`` (:meth:`TmallTruth.repeat_probability`), about 6% positives.
* **user_info.** ``age_range`` 0..8 and ``gender`` 0/1/2 with the real marginals, some values empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data import schemas

from . import latent as L
from .kuairand import CsvSink
from .latent import LatentConfig

LAST_DATE = date(schemas.TMALL_DEFAULT_YEAR, 11, 11)
MAX_DAYS = 186
#: Published catalogue sizes.
TMALL_CATEGORIES = 1_658
TMALL_SELLERS = 4_995
TMALL_BRANDS = 8_444
#: Expected log rows per intent chain at the default action probabilities (calibrated).
ROWS_PER_CHAIN = 2.01
_AGE_COUNTS = [92_914, 24, 52_871, 111_654, 79_991, 40_777, 35_464, 6_992, 1_266]
_GENDER_COUNTS = [285_638, 121_670, 16_862]
_STREAM_CATALOGUE = 201


@dataclass(frozen=True)
class TmallSynthConfig(LatentConfig):
    """Configuration of a synthetic Tmall IJCAI-15 dataset (see the module docstring for the process)."""

    #: Users ``1..users`` (real: 424,170).
    users: int = schemas.TMALL_USERS
    #: Items ``1..items`` (real: 1,090,390).
    items: int = schemas.TMALL_ITEMS
    #: Days ending 11-11, 1..186 (the real log: six months, 186 days).
    days: int = MAX_DAYS
    #: Categories (default: 1,658 scaled with ``items``, at least ``dim``).
    categories: int | None = None
    #: Sellers / merchants (default: 4,995 scaled with ``items``, at least ``2 * dim``).
    sellers: int | None = None
    #: Brands (default: 8,444 scaled with ``items``, at least ``sellers``).
    brands: int | None = None
    #: Expected log rows per user per ordinary day (default: 54.9M real rows at real size).
    rows_per_user_day: float = 0.6023
    #: Volume of 11-11 relative to an ordinary day.
    double11_boost: float = 30.0
    #: Maximum favourite sellers per user (1..this).
    favourite_sellers: int = 4
    #: Loyalty ~ Beta(loyalty_a, loyalty_b).
    loyalty_a: float = 1.5
    loyalty_b: float = 5.0
    #: A chain comes from a favourite seller with probability ``loyal_visit * loyalty``.
    loyal_visit: float = 0.6
    #: Mean number of repeated clicks after the first one in a chain.
    extra_clicks: float = 0.8
    #: Multiplier of the affinity in the action logits.
    affinity_scale: float = 4.0
    #: Action logit biases, calibrated to the real mix (clicks 88.4%, purchases 6.0%, favourites 5.5%,
    #: carts 0.14% of the rows).
    purchase_bias: float = -3.49
    double11_purchase: float = 1.5
    favourite_bias: float = -3.33
    cart_bias: float = -7.28
    #: Repeat-buyer label logit: ``repeat_bias + repeat_loyalty * loyalty + repeat_favourite * fav +
    #: repeat_retention * retention`` (about 6% positives, like the real train set).
    repeat_bias: float = -4.69
    repeat_loyalty: float = 5.0
    repeat_favourite: float = 1.5
    repeat_retention: float = 0.5
    #: Fraction of rows whose brand is missing (real: 91,015 of 54.9M).
    missing_brand_rate: float = 0.0017
    #: Fractions of ``user_info`` rows with an empty age_range / gender (real: 2,217 and 6,436 of 424,170).
    missing_age_rate: float = 0.0052
    missing_gender_rate: float = 0.0152
    #: Write ``time_stamp`` zero-padded (``0829``) instead of as a plain integer (``829``).
    time_stamp_zero_pad: bool = False
    #: Text of a missing ``brand_id``: ``""`` (empty field) or ``"NULL"``.
    missing_brand_text: str = ""
    #: Target rows per generation chunk (part of the random stream; bounds memory).
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        self._check_latent()
        if not 1 <= int(self.days) <= MAX_DAYS:
            raise ValueError(f"days must be in 1..{MAX_DAYS}, got {self.days}")
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.items < 2 * self.dim:
            raise ValueError(f"items must be >= 2 * dim ({2 * self.dim}), got {self.items}")
        scale = self.items / schemas.TMALL_ITEMS
        if self.categories is None:
            object.__setattr__(self, "categories", max(self.dim, int(round(TMALL_CATEGORIES * scale))))
        if self.sellers is None:
            object.__setattr__(self, "sellers", min(self.items, max(2 * self.dim, int(round(TMALL_SELLERS * scale)))))
        if self.brands is None:
            object.__setattr__(self, "brands", max(self.sellers, int(round(TMALL_BRANDS * scale))))
        if not self.dim <= self.categories:
            raise ValueError("categories must be >= dim")
        if not self.dim <= self.sellers <= self.items:
            raise ValueError("sellers must be in dim..items")
        if self.brands < self.sellers:
            raise ValueError("brands must be >= sellers")
        if self.missing_brand_text not in ("", "NULL"):
            raise ValueError('missing_brand_text must be "" or "NULL"')
        for name in ("missing_brand_rate", "missing_age_rate", "missing_gender_rate", "loyal_visit"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.rows_per_user_day < 0 or self.double11_boost < 0 or self.extra_clicks < 0:
            raise ValueError("rows_per_user_day, double11_boost and extra_clicks must be >= 0")
        if self.favourite_sellers < 1:
            raise ValueError("favourite_sellers must be >= 1")
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")

    def expected_rows(self) -> float:
        """Approximate expected number of log rows."""
        return self.users * self.rows_per_user_day * (self.days - 1 + self.double11_boost)


def tmall_dates(days: int) -> np.ndarray:
    """``(days,)`` int64 ``mmdd`` of the last ``days`` days ending 11-11."""
    first = LAST_DATE - timedelta(days=days - 1)
    return np.array([int((first + timedelta(days=d)).strftime("%m%d")) for d in range(days)], dtype=np.int64)


class _World:
    """Catalogue, topics, popularity: everything shared by users."""

    def __init__(self, cfg: TmallSynthConfig):
        self.cfg = cfg
        k = cfg.dim
        self.dates = tmall_dates(cfg.days)
        self.active = L.dormant_active(cfg, cfg.days)
        self.centroids = L.topic_centroids(cfg.seed, k)
        rng = L.make_rng(cfg.seed, L.S_ITEMS, _STREAM_CATALOGUE)
        n_s, n_i, n_c, n_b = cfg.sellers, cfg.items, cfg.categories, cfg.brands
        # sellers: topic, size, retention
        self.seller_topic = L.ensure_all_topics(rng.integers(0, k, n_s), k, rng)
        size = np.exp(1.2 * rng.standard_normal(n_s))
        self.seller_retention = rng.standard_normal(n_s)
        # categories: topic of each (balanced), sellers' main category
        self.cat_topic = rng.permutation(np.arange(n_c) % k)
        cat_order = np.argsort(self.cat_topic, kind="stable")
        cat_hi = np.cumsum(np.bincount(self.cat_topic, minlength=k))
        cat_lo = cat_hi - np.bincount(self.cat_topic, minlength=k)
        st = self.seller_topic
        main_cat = cat_order[cat_lo[st] + (rng.random(n_s) * (cat_hi[st] - cat_lo[st])).astype(np.int64)]
        # items -> seller (every seller has at least one item)
        seller = np.empty(n_i, dtype=np.int64)
        seller[:n_s] = rng.permutation(n_s)
        pick = np.searchsorted(np.cumsum(size) / size.sum(), rng.random(n_i - n_s), side="right")
        seller[n_s:] = np.minimum(pick, n_s - 1)
        rng.shuffle(seller)
        self.item_seller = seller
        topic = st[seller]
        other_cat = cat_order[cat_lo[topic] + (rng.random(n_i) * (cat_hi[topic] - cat_lo[topic])).astype(np.int64)]
        self.item_cat = np.where(rng.random(n_i) < 0.7, main_cat[seller], other_cat)
        # brands -> seller (every seller has at least one brand); item -> one of its seller's brands
        brand_seller = np.concatenate([np.arange(n_s), rng.integers(0, n_s, n_b - n_s)])
        b_order = np.argsort(brand_seller, kind="stable")
        b_cnt = np.bincount(brand_seller, minlength=n_s)
        b_lo = np.cumsum(b_cnt) - b_cnt
        brand_id = rng.permutation(n_b)  # brand index -> 0-based brand id (ids unrelated to seller ids)
        self.item_brand = brand_id[b_order[b_lo[seller] + (rng.random(n_i) * b_cnt[seller]).astype(np.int64)]]
        self.space = L.ItemSpace(cfg, topic.astype(np.int16), self.centroids)
        # missing brand: item level, the top 1% most popular items excluded (rate compensated)
        top = self.space.rank <= max(1, n_i // 100)
        w = self.space.weight
        keep_share = float(w[~top].sum() / w.sum())
        p_miss = min(1.0, cfg.missing_brand_rate / max(keep_share, 1e-12))
        self.brand_missing = (~top) & (rng.random(n_i) < p_miss)
        # sellers grouped by topic, weighted by their total exposure weight (favourite-seller draws)
        seller_w = np.bincount(seller, weights=w, minlength=n_s)
        self.seller_weight = seller_w
        self._s_order = np.argsort(st, kind="stable")
        self._s_cum = np.cumsum(seller_w[self._s_order])
        s_cnt = np.bincount(st, minlength=k)
        self._s_hi = np.cumsum(s_cnt)
        self._s_lo = self._s_hi - s_cnt
        # items grouped by seller, weighted by popularity
        self._i_order = np.argsort(seller, kind="stable")
        self._i_cum = np.cumsum(w[self._i_order])
        i_cnt = np.bincount(seller, minlength=n_s)
        self._i_hi = np.cumsum(i_cnt)
        self._i_lo = self._i_hi - i_cnt

    def sample_seller_in_topic(self, topic: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self._s_order[L.segment_sample(self._s_cum, self._s_lo[topic], self._s_hi[topic], u)]

    def sample_item_of_seller(self, seller: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self._i_order[L.segment_sample(self._i_cum, self._i_lo[seller], self._i_hi[seller], u)]


def _users(world: _World, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Latent values and traits of users with 0-based indices ``[lo, hi)``."""
    cfg = world.cfg
    k, f = cfg.dim, cfg.favourite_sellers
    lat = dict(L.user_latents(cfg, cfg.days, lo, hi))

    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        g = np.asarray(_GENDER_COUNTS, dtype=np.float64)
        a = np.asarray(_AGE_COUNTS, dtype=np.float64)
        return {
            "gender": np.minimum(np.searchsorted(np.cumsum(g) / g.sum(), rng.random(n), side="right"), 2),
            "age": np.minimum(np.searchsorted(np.cumsum(a) / a.sum(), rng.random(n), side="right"), 8),
            "gender_missing": rng.random(n) < cfg.missing_gender_rate,
            "age_missing": rng.random(n) < cfg.missing_age_rate,
            "loyalty": rng.beta(cfg.loyalty_a, cfg.loyalty_b, n),
            "n_fav": rng.integers(1, f + 1, n),
            "fav_u": rng.random((n, 2 * f)),
            "split": (rng.random(n) < 0.5).astype(np.int64),
            "order_key": rng.random(n),
        }

    tr = L.per_user_blocks(cfg.seed, L.S_USER_TRAITS, lo, hi, make)
    # gender shifts the taste: +0.6 on a quarter of the topics for women, another quarter for men
    q = max(1, k // 4)
    shift = np.zeros((3, k), dtype=np.float32)
    shift[0, :q] = 0.6
    shift[1, q : 2 * q] = 0.6
    lat["base"] = lat["base"] + shift[tr["gender"]]
    # favourite sellers: topic from the long-run taste, seller by size within the topic
    n = hi - lo
    cum = np.cumsum(L.softmax_rows(lat["base"]), axis=1)
    fav = np.empty((n, f), dtype=np.int64)
    for j in range(f):
        t = L.categorical(cum, tr["fav_u"][:, 2 * j])
        fav[:, j] = world.sample_seller_in_topic(t, tr["fav_u"][:, 2 * j + 1])
    fav[np.arange(f)[None, :] >= tr["n_fav"][:, None]] = -1
    lat.update({k_: v for k_, v in tr.items() if k_ != "fav_u"})
    lat["fav"] = fav
    lat["style"] = L.user_styles(cfg, lo, hi)
    return lat


def _repeat_logit(cfg: TmallSynthConfig, loyalty: np.ndarray, is_fav: np.ndarray, retention: np.ndarray) -> np.ndarray:
    return (cfg.repeat_bias + cfg.repeat_loyalty * loyalty + cfg.repeat_favourite * is_fav
            + cfg.repeat_retention * retention)


def _chunk(world: _World, lat: dict[str, np.ndarray], lo: int, rng: np.random.Generator):
    """Log rows, train/test pairs and user_info of one user chunk."""
    cfg = world.cfg
    n, days = lat["base"].shape[0], cfg.days
    last = days - 1
    dayf = np.ones(days)
    dayf[last] = cfg.double11_boost
    lam = (cfg.rows_per_user_day / ROWS_PER_CHAIN) * lat["activity"][:, None] * dayf[None, :]
    counts = rng.poisson(lam).ravel()
    cell = np.repeat(np.arange(n * days, dtype=np.int64), counts)
    cu, ct = cell // days, cell % days
    m = cell.size
    r = rng.random((14, m))
    p = L.topic_probs_at(cfg, lat, world.active, cu, ct)
    # item: a favourite seller's item (loyal users) or topic ~ P * W then item ~ popularity
    n_fav = lat["n_fav"][cu]
    from_fav = r[0] < cfg.loyal_visit * lat["loyalty"][cu]
    slot = np.minimum((r[1] * n_fav).astype(np.int64), n_fav - 1)
    fav_seller = lat["fav"][cu, slot]
    topic = L.sample_exposure_topics(p, world.space.topic_mass, r[2])
    item = world.space.sample_in_topic(topic, r[3])
    fi = np.flatnonzero(from_fav)
    item[fi] = world.sample_item_of_seller(fav_seller[fi], r[3][fi])
    x = cfg.affinity_scale * L.affinity(p @ world.centroids, world.space.vectors(item)).astype(np.float64)
    is11 = ct == last
    # action style of the user on the item's topic: decisive (> 0) buys more and sooner and favourites less
    st = cfg.style_strength * lat["style"][cu, world.space.topics[item]].astype(np.float64)
    keep = L.rare_logit_correction(cfg.style_strength)
    buy = r[4] < L.sigmoid(cfg.purchase_bias + keep + x + st + cfg.double11_purchase * is11 + 0.8 * from_fav)
    fav = r[5] < L.sigmoid(cfg.favourite_bias + keep + x - st)
    cart = r[6] < L.sigmoid(cfg.cart_bias + x)
    extra = rng.geometric(1.0 / (1.0 + cfg.extra_clicks), m) - 1
    same_day = L.sigmoid(0.4 + 1.5 * st)  # 0.6 at style 0, as without the style
    delay = 1.0 / (1.0 + np.exp(np.clip(st, -3, 3)))  # slower follow-up purchases when deliberate
    gap = np.where(r[7] < same_day, 0, rng.geometric(0.2 + 0.3 * (1 - delay), m))
    dp = ct + gap
    pre11 = (ct >= last - 14) & (ct < last) & (r[8] < 0.5)
    dp = np.where(pre11, last, dp)
    buy &= dp <= last
    df = ct + np.where(r[9] < 0.75, 0, 1 + (r[10] * 3).astype(np.int64))
    df = np.where(buy, np.minimum(df, dp), df)
    fav &= df <= last
    dc = np.where(buy, ct + (r[12] * (dp - ct + 1)).astype(np.int64), ct + (r[11] < 0.2))
    cart &= dc <= last
    revisit = buy & (dp > ct) & (r[13] < 0.5)
    # rows: (chain, day, action)
    ch_click = np.repeat(np.arange(m), 1 + extra)
    parts = [
        (ch_click, ct[ch_click], 0),
        (np.flatnonzero(revisit), dp[revisit], 0),
        (np.flatnonzero(fav), df[fav], 3),
        (np.flatnonzero(cart), dc[cart], 1),
        (np.flatnonzero(buy), dp[buy], 2),
    ]
    chain = np.concatenate([c for c, _, _ in parts])
    day = np.concatenate([d for _, d, _ in parts])
    action = np.concatenate([np.full(c.size, a, dtype=np.int64) for c, _, a in parts])
    # group rows by user (users in a shuffled order), shuffle within the user
    order = np.lexsort((rng.random(chain.size), lat["order_key"][cu[chain]]))
    chain, day, action = chain[order], day[order], action[order]
    it = item[chain]
    brand = np.where(world.brand_missing[it], -1, world.item_brand[it] + 1)
    log = {
        "user_id": cu[chain] + lo + 1, "item_id": it + 1, "cat_id": world.item_cat[it] + 1,
        "seller_id": world.item_seller[it] + 1, "brand_id": brand, "time_stamp": world.dates[day],
        "action_type": action,
    }
    # repeat-buyer pairs: (user, seller) with a purchase on 11-11
    b11 = np.flatnonzero(buy & (dp == last))
    pu, ps = np.unique(np.stack([cu[b11], world.item_seller[item[b11]]]), axis=1) if b11.size else (
        np.zeros((2, 0), dtype=np.int64))
    is_fav = (lat["fav"][pu] == ps[:, None]).any(axis=1)
    prob = L.sigmoid(_repeat_logit(cfg, lat["loyalty"][pu], is_fav, world.seller_retention[ps]))
    label = (rng.random(pu.size) < prob).astype(np.int64)
    po = np.lexsort((ps, lat["order_key"][pu]))
    pu, ps, label = pu[po], ps[po], label[po]
    pairs = {"user_id": pu + lo + 1, "merchant_id": ps + 1, "label": label, "split": lat["split"][pu]}
    uo = np.argsort(lat["order_key"], kind="stable")
    info = {
        "user_id": uo + lo + 1,
        "age_range": np.where(lat["age_missing"][uo], -1, lat["age"][uo]),
        "gender": np.where(lat["gender_missing"][uo], -1, lat["gender"][uo]),
    }
    return log, pairs, info


def _nullable(df: pl.DataFrame, *names: str) -> pl.DataFrame:
    return df.with_columns([pl.when(pl.col(c) >= 0).then(pl.col(c)).alias(c) for c in names])


def user_chunks(cfg: TmallSynthConfig) -> list[tuple[int, int]]:
    """The 0-based ``[lo, hi)`` user ranges of the generation chunks (part of the random stream)."""
    per_user = cfg.rows_per_user_day * (cfg.days - 1 + cfg.double11_boost)
    step = int(max(1, min(cfg.users, cfg.chunk_rows // max(per_user, 1.0))))
    return [(lo, min(lo + step, cfg.users)) for lo in range(0, cfg.users, step)]


def write_tmall(cfg: TmallSynthConfig, directory: str | Path, progress=None) -> dict[str, int]:
    """Write the four files into an existing ``directory``; returns ``{file name: data rows}``.

    Use :func:`recsys.data.synth.synthesize` for atomic output (temporary sibling folder + rename).
    """
    directory = Path(directory)
    world = _World(cfg)
    log_schema = dict(schemas.TMALL_USER_LOG)
    if cfg.time_stamp_zero_pad:
        log_schema["time_stamp"] = pl.String()
    sinks = {
        schemas.TMALL_USER_LOG_FILE: CsvSink(directory / schemas.TMALL_USER_LOG_FILE, schemas.TMALL_USER_LOG,
                                             null_value=cfg.missing_brand_text),
        schemas.TMALL_USER_INFO_FILE: CsvSink(directory / schemas.TMALL_USER_INFO_FILE, schemas.TMALL_USER_INFO),
        schemas.TMALL_TRAIN_FILE: CsvSink(directory / schemas.TMALL_TRAIN_FILE, schemas.TMALL_TRAIN),
        schemas.TMALL_TEST_FILE: CsvSink(directory / schemas.TMALL_TEST_FILE, schemas.TMALL_TEST),
    }
    try:
        t0 = time.perf_counter()
        for ci, (lo, hi) in enumerate(user_chunks(cfg)):
            lat = _users(world, lo, hi)
            log, pairs, info = _chunk(world, lat, lo, L.make_rng(cfg.seed, L.S_EVENTS, ci))
            df = _nullable(pl.DataFrame(log, schema=schemas.TMALL_USER_LOG), "brand_id")
            if cfg.time_stamp_zero_pad:
                df = df.with_columns(pl.col("time_stamp").cast(pl.String).str.zfill(4))
            sinks[schemas.TMALL_USER_LOG_FILE].write(df)
            sinks[schemas.TMALL_USER_INFO_FILE].write(
                _nullable(pl.DataFrame(info, schema=schemas.TMALL_USER_INFO), "age_range", "gender"))
            train = pairs["split"] == 0
            sinks[schemas.TMALL_TRAIN_FILE].write(pl.DataFrame(
                {k: pairs[k][train] for k in ("user_id", "merchant_id", "label")}, schema=schemas.TMALL_TRAIN))
            sinks[schemas.TMALL_TEST_FILE].write(pl.DataFrame(
                {"user_id": pairs["user_id"][~train], "merchant_id": pairs["merchant_id"][~train]}
            ).with_columns(prob=pl.lit(None, dtype=pl.Float64())).cast(schemas.TMALL_TEST))
            if progress is not None:
                progress(f"tmall users {hi}/{cfg.users} ({time.perf_counter() - t0:.1f}s)")
    finally:
        for s in sinks.values():
            s.close()
    return {name: s.rows for name, s in sinks.items()}


# ---------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TmallTruth:
    """Planted ground truth of a synthetic Tmall config.

    Arrays are indexed by the **raw 1-based ids** written in the files (row 0 is padding: zeros / -1),
    e.g. ``item_factors[item_id]``, ``user_loyalty[user_id]``, ``seller_retention[seller_id]``.
    Day index ``d`` is ``time_stamp == dates[d]``. ``daily_*`` arrays are for small configs.
    """

    config: TmallSynthConfig
    #: (days,) mmdd of each day index (the last one is 1111).
    dates: np.ndarray
    topic_centroids: np.ndarray
    #: (items+1,) topic / category id / seller id / brand id (-1: missing) / popularity rank / weight.
    item_topic: np.ndarray
    item_category: np.ndarray
    item_seller: np.ndarray
    item_brand: np.ndarray
    item_rank: np.ndarray
    item_weight: np.ndarray
    #: (items+1, dim) unit item vectors.
    item_factors: np.ndarray
    #: (sellers+1,) topic and latent retention of each seller.
    seller_topic: np.ndarray
    seller_retention: np.ndarray
    #: (users+1, dim) long-run taste.
    user_factors: np.ndarray
    user_activity: np.ndarray
    user_loyalty: np.ndarray
    #: (users+1, favourite_sellers) favourite seller ids, -1 padded.
    user_favourite_sellers: np.ndarray
    #: (users+1, K) the action style of each user per topic (row 0: padding; see
    #: LatentConfig.style_strength).
    user_style: np.ndarray
    #: (users+1,) 0 = train user, 1 = test user.
    user_split: np.ndarray
    dormant_topic: np.ndarray
    dormant_active: np.ndarray
    #: (users+1, days, K) daily topic mixture and (users+1, days, dim) daily interest.
    daily_topic_probs: np.ndarray
    daily_interest: np.ndarray

    def affinity(self, users: np.ndarray, items: np.ndarray, days: np.ndarray | None = None) -> np.ndarray:
        """``<interest, v_item>`` for raw ids; daily interest when ``days`` (day indices) is given."""
        users, items = np.asarray(users), np.asarray(items)
        u = self.user_factors[users] if days is None else self.daily_interest[users, np.asarray(days)]
        return np.einsum("ij,ij->i", u, self.item_factors[items])

    def day_index(self, time_stamp: np.ndarray) -> np.ndarray:
        """Day index of mmdd time stamps."""
        return np.searchsorted(self.dates, np.asarray(time_stamp))

    def repeat_probability(self, users: np.ndarray, merchants: np.ndarray) -> np.ndarray:
        """The probability that ``users`` become repeat buyers of ``merchants`` (raw ids): the label's law."""
        users, merchants = np.asarray(users), np.asarray(merchants)
        is_fav = (self.user_favourite_sellers[users] == merchants[:, None]).any(axis=1)
        return L.sigmoid(_repeat_logit(self.config, self.user_loyalty[users], is_fav, self.seller_retention[merchants]))


def tmall_truth(cfg: TmallSynthConfig) -> TmallTruth:
    """Recompute the planted ground truth of ``cfg`` (no logs are generated)."""
    world = _World(cfg)
    lat = _users(world, 0, cfg.users)
    probs = L.topic_probs_all(cfg, lat, cfg.days)

    def pad(a: np.ndarray, fill=0) -> np.ndarray:
        out = np.full((a.shape[0] + 1,) + a.shape[1:], fill, dtype=a.dtype)
        out[1:] = a
        return out

    fav = np.where(lat["fav"] >= 0, lat["fav"] + 1, -1)
    return TmallTruth(
        config=cfg,
        dates=world.dates,
        topic_centroids=world.centroids,
        item_topic=pad(world.space.topics.astype(np.int64), -1),
        item_category=pad(world.item_cat + 1),
        item_seller=pad(world.item_seller + 1),
        item_brand=pad(np.where(world.brand_missing, -1, world.item_brand + 1)),
        item_rank=pad(world.space.rank.astype(np.int64)),
        item_weight=pad(world.space.weight),
        item_factors=pad(world.space.vectors(np.arange(cfg.items))),
        seller_topic=pad(world.seller_topic.astype(np.int64), -1),
        seller_retention=pad(world.seller_retention),
        user_factors=pad(L.taste_vectors(lat, world.centroids)),
        user_activity=pad(lat["activity"]),
        user_loyalty=pad(lat["loyalty"]),
        user_favourite_sellers=pad(fav, -1),
        user_style=pad(lat["style"]),
        user_split=pad(lat["split"], -1),
        dormant_topic=pad(lat["dormant"], -1),
        dormant_active=world.active,
        daily_topic_probs=pad(probs),
        daily_interest=pad((probs @ world.centroids).astype(np.float32)),
    )
