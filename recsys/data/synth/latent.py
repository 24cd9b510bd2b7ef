"""The generative process shared by the synthetic KuaiRand and Tmall datasets (numpy only).

Everything here is a pure function of ``(config, seed)``: the writers (:mod:`.kuairand`, :mod:`.tmall`)
and the ground-truth functions (``kuairand_truth``/``tmall_truth``) call the same code, so the truth is
recomputed exactly without writing any log.

Generative process
------------------
* **Topics.** ``K = dim`` topics with orthonormal centroids ``C[k]`` in ``R^dim`` (a random rotation).
* **Items.** Each item has one topic (chosen by the dataset module: via the video's author in KuaiRand,
  via the seller in Tmall) and a latent vector ``v_i = normalise(C[topic_i] + item_noise * g_i / sqrt(dim))``
  with ``g_i`` standard normal. ``g_i`` comes from a counter-based hash of ``(seed, item id)``, so item
  vectors can be computed on demand for any id (large catalogues such as KuaiRand-1K/27K are never
  materialised as a dense table; small ones are tabulated, with identical values).
* **Popularity.** Items get a random popularity rank ``r_i`` (1 = most popular) and an exposure weight
  ``w_i = r_i ** -zipf_alpha``. Within a topic an item is drawn with probability proportional to ``w_i``;
  a topic is drawn with probability proportional to ``P_u,t(k) * W_k`` (``W_k`` = the topic's total
  weight), so the exposure probability of item ``i`` for user ``u`` is ``prop. to w_i * P_u,t(topic_i)``
  and the item counts of a log follow ``count ~ rank ** -zipf_alpha``.
* **Users: taste.** A user has 1..``favourite_topics`` favourite topics (logit ``+favourite_boost``, then
  ``*0.8`` for the 2nd, ``*0.6`` for the 3rd, ...) on top of ``N(0, taste_noise)`` logits.
* **Users: drift.** The logits move day by day: ``z_u,t = z_u,t-1 + N(0, 1) * drift / sqrt(days)``
  (a random walk whose standard deviation over the whole span is ``drift``). The daily topic mixture is
  ``softmax(base_u + z_u,t)``, so items of day ``t`` match the interest of day ``t`` better than the
  interest of a day far away.
* **Users: a dormant long-term interest.** Each user has one *dormant* topic (never a favourite). It is
  absent from the ordinary mixture, and on the first ``dormant_early`` and last ``dormant_late``
  fraction of days it takes a share ``dormant_share`` of the mixture:
  ``P_u,t = (1 - s) * softmax(...) + s * onehot(dormant_u)``. In the gap between the two windows the
  user never sees that topic: it comes back after a long absence (a target for lifelong-sequence models).
  With ``dormant_period > 0`` it instead comes back periodically: active on ``dormant_on`` days of every
  ``dormant_period``, at a per-user phase (a hash of the seed and the user id) or one phase for all
  (``dormant_phase``), so returns after a gap of
  ``dormant_period - dormant_on`` days happen in the training period too (something a model can learn from).
* **Users: activity.** ``activity_u = exp(sigma * z - sigma^2 / 2)`` (lognormal with mean 1) scales the
  number of events per day.
* **Affinity.** The interest vector of user ``u`` on day ``t`` is ``I_u,t = P_u,t @ C`` and the affinity
  with item ``i`` is ``<I_u,t, v_i>`` (about 0..0.9). The dataset modules turn it into action
  probabilities (``sigmoid(bias + scale * affinity)``).

Per-user latent values are drawn in fixed blocks of :data:`USER_BLOCK` users from the RNG stream
``(seed, stream, block)``, so a user's latent values do not depend on how the writer chunks users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Users per latent block (the unit of per-user random streams).
USER_BLOCK = 512
#: Item vectors are tabulated when ``items * dim`` is at most this many floats, else computed on demand.
MAX_ITEM_TABLE = 1 << 26

# RNG stream ids (the first element of every SeedSequence spawn key).
S_CENTROIDS = 1
S_ITEM_RANK = 2
S_ITEM_NOISE = 3
S_USERS = 4
S_ITEMS = 5
S_USER_TRAITS = 6
S_EVENTS = 7
S_ITEM_FEATURES = 8
S_USER_FEATURES = 9
S_TABLES = 10
S_RANDOM_LOG = 11
S_LABELS = 12
S_USER_STYLE = 13
S_DORMANT_PHASE = 14


def make_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random generator for ``(seed, *key)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key))))


@dataclass(frozen=True)
class LatentConfig:
    """Knobs of the shared generative process (inherited by the dataset configs)."""

    #: Random seed: the same config gives byte-identical files.
    seed: int = 0
    #: Latent dimension, also the number of topics (4..32).
    dim: int = 16
    #: Zipf exponent of item popularity: exposure weight ``rank ** -zipf_alpha``.
    zipf_alpha: float = 1.0
    #: Spread of item vectors around their topic centroid.
    item_noise: float = 0.5
    #: Maximum number of favourite topics per user (each user has 1..this many).
    favourite_topics: int = 3
    #: Logit boost of a user's first favourite topic.
    favourite_boost: float = 3.0
    #: Standard deviation of the other topic logits.
    taste_noise: float = 0.8
    #: Standard deviation of the interest random walk over the whole span (logit units).
    drift: float = 1.5
    #: Share of the dormant topic in the mixture while it is active.
    dormant_share: float = 0.3
    #: Fraction of the days, at the start, where the dormant topic is active.
    dormant_early: float = 0.2
    #: Fraction of the days, at the end, where the dormant topic is active again.
    dormant_late: float = 0.2
    #: If > 0: the dormant topic is active on ``dormant_on`` days of every ``dormant_period`` days, at a
    #: per-user phase, instead of the early and late windows (``dormant_early``/``dormant_late`` unused).
    dormant_period: int = 0
    dormant_on: int = 3
    #: The schedule's phase in days: -1 a per-user phase, else the same for every user (active on days ``t``
    #: with ``(t + dormant_phase) % dormant_period < dormant_on``: synchronized returns).
    dormant_phase: int = -1
    #: Lognormal spread of user activity (events per day scale, mean 1).
    activity_sigma: float = 1.0
    #: Strength of the per-(user, topic) *action style*, a standard normal ``style[u, k]``: how decisive
    #: (Tmall: more and faster purchases, fewer favourites first) or engaged (KuaiRand: more likes, follows,
    #: comments, forwards, and longer plays) user ``u`` is on topic ``k``. It shifts action logits by
    #: ``style_strength * style`` and the timing of actions, so a user's past action timing on similar
    #: items predicts the next chain: the action-timing structure A2Gen models. 0 turns it off.
    style_strength: float = 1.0

    def _check_latent(self) -> None:
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 4 <= self.dim <= 32:
            raise ValueError(f"dim must be in 4..32, got {self.dim}")
        if not 1 <= self.favourite_topics <= self.dim - 2:
            raise ValueError(f"favourite_topics must be in 1..dim-2, got {self.favourite_topics}")
        if self.zipf_alpha < 0:
            raise ValueError("zipf_alpha must be >= 0")
        if not 0.0 <= self.dormant_share < 1.0:
            raise ValueError("dormant_share must be in [0, 1)")
        for name in ("dormant_early", "dormant_late"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.dormant_period < 0 or (self.dormant_period and not 1 <= self.dormant_on < self.dormant_period):
            raise ValueError("dormant_period must be >= 0, and dormant_on in 1..dormant_period-1 when it is > 0")
        for name in ("item_noise", "taste_noise", "drift", "activity_sigma", "favourite_boost", "style_strength"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


# ---------------------------------------------------------------------------------------------------------
# Hash-based randomness (counter-based: a pure function of (key, id))
# ---------------------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_key(seed: int, stream: int) -> np.uint64:
    return splitmix64(np.array([(int(seed) << 8) ^ int(stream)], dtype=np.uint64))[0]


def hash_uniform(key: np.uint64, ids: np.ndarray) -> np.ndarray:
    """Uniform(0, 1) float64, one per id, a pure function of ``(key, id)``."""
    h = splitmix64(ids.astype(np.uint64) ^ key)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def hash_normal(key: np.uint64, ids: np.ndarray, dim: int) -> np.ndarray:
    """Standard normal ``(len(ids), dim)`` float32, a pure function of ``(key, id, column)``.

    One 64-bit hash per pair of columns feeds a Box-Muller transform (24-bit uniforms).
    """
    pairs = (dim + 1) // 2
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64)[:, None] * np.uint64(pairs) + np.arange(pairs, dtype=np.uint64)[None, :]
    h = splitmix64(x ^ key)
    scale = np.float32(1.0 / (1 << 24))
    u1 = ((h >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * scale
    u2 = ((h & np.uint64(0xFFFFFF)).astype(np.float32) + np.float32(0.5)) * scale
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    theta = np.float32(2.0 * math.pi) * u2
    out = np.empty((ids.size, 2 * pairs), dtype=np.float32)
    out[:, 0::2] = r * np.cos(theta)
    out[:, 1::2] = r * np.sin(theta)
    return out[:, :dim]


# ---------------------------------------------------------------------------------------------------------
# Topics and items
# ---------------------------------------------------------------------------------------------------------


def topic_centroids(seed: int, dim: int) -> np.ndarray:
    """``(dim, dim)`` float32 orthonormal rows: the topic centroids."""
    g = make_rng(seed, S_CENTROIDS).standard_normal((dim, dim))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]
    return np.ascontiguousarray(q.T).astype(np.float32)


def segment_sample(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw a position in ``[lo, hi)`` with probability proportional to the weights behind ``cum``.

    ``cum`` is the inclusive cumulative sum of the weights of an ordered array; ``lo``/``hi`` are per-draw
    segment bounds (non-empty) and ``u`` per-draw uniforms in [0, 1).
    """
    before = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    total = cum[hi - 1] - before
    pos = np.searchsorted(cum, before + u * total, side="right")
    return np.clip(pos, lo, hi - 1)


def categorical(cum_probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: ``cum_probs`` is ``(n, K)`` cumulative (last column ~1), ``u`` ``(n,)``."""
    k = cum_probs.shape[1]
    out = (cum_probs < (u * cum_probs[:, -1])[:, None]).sum(axis=1)
    return np.minimum(out, k - 1)


class ItemSpace:
    """Items: topic, popularity rank/weight, latent vectors, and the popularity samplers."""

    def __init__(self, cfg: LatentConfig, topics: np.ndarray, centroids: np.ndarray):
        n = int(topics.size)
        self.n = n
        self.dim = cfg.dim
        self.noise = float(cfg.item_noise)
        self.centroids = centroids
        self.topics = topics.astype(np.int8 if cfg.dim <= 127 else np.int16)
        rank = make_rng(cfg.seed, S_ITEM_RANK).permutation(n).astype(np.int32)
        rank += 1
        #: 1-based popularity rank.
        self.rank = rank
        #: Exposure weight ``rank ** -alpha``.
        self.weight = rank.astype(np.float64) ** (-float(cfg.zipf_alpha))
        order = np.argsort(self.topics, kind="stable").astype(np.int32)
        self._order = order
        self._cum = np.cumsum(self.weight[order])
        counts = np.bincount(self.topics, minlength=cfg.dim)
        self._hi = np.cumsum(counts)
        self._lo = self._hi - counts
        mass = np.bincount(self.topics, weights=self.weight, minlength=cfg.dim)
        #: Total exposure weight of each topic, normalised to sum 1 (``W_k``).
        self.topic_mass = (mass / mass.sum()).astype(np.float64)
        self._key = hash_key(cfg.seed, S_ITEM_NOISE)
        self._table = None
        if n * cfg.dim <= MAX_ITEM_TABLE:
            table = np.empty((n, cfg.dim), dtype=np.float32)
            for a in range(0, n, 1 << 20):
                table[a : a + (1 << 20)] = self._compute(np.arange(a, min(a + (1 << 20), n)))
            self._table = table
        #: Whether the item vectors are held in a dense table (else computed on demand).
        self.tabulated = self._table is not None

    def _compute(self, ids: np.ndarray) -> np.ndarray:
        noise = hash_normal(self._key, ids, self.dim)
        v = self.centroids[self.topics[ids]] + (self.noise / math.sqrt(self.dim)) * noise
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32, copy=False)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """``(len(ids), dim)`` float32 unit item vectors (0-based item indices)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._table is not None:
            return self._table[ids]
        return self._compute(ids)

    def sample_in_topic(self, topic: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One item per draw, from ``topic``, with probability proportional to its popularity weight."""
        pos = segment_sample(self._cum, self._lo[topic], self._hi[topic], u)
        return self._order[pos].astype(np.int64)


def ensure_all_topics(topics: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Make sure every topic has at least one member (when there are at least ``k`` members)."""
    if topics.size >= k:
        counts = np.bincount(topics, minlength=k)
        missing = np.flatnonzero(counts == 0)
        if missing.size:
            pos = rng.choice(topics.size, size=missing.size, replace=False)
            topics[pos] = missing
    return topics


# ---------------------------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------------------------


def per_user_blocks(
    seed: int, stream: int, lo: int, hi: int, make: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-user arrays for users ``[lo, hi)``, drawn in fixed blocks of :data:`USER_BLOCK` users.

    ``make(rng, USER_BLOCK)`` returns arrays with a leading user axis; block ``b`` uses the stream
    ``(seed, stream, b)``, so a user's values do not depend on ``lo``/``hi``.
    """
    parts: list[dict[str, np.ndarray]] = []
    for b in range(lo // USER_BLOCK, (hi - 1) // USER_BLOCK + 1):
        d = make(make_rng(seed, stream, b), USER_BLOCK)
        s0 = max(lo - b * USER_BLOCK, 0)
        s1 = min(hi - b * USER_BLOCK, USER_BLOCK)
        parts.append({k: v[s0:s1] for k, v in d.items()})
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def user_latents(cfg: LatentConfig, days: int, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Latent values of users ``[lo, hi)``.

    Keys: ``base`` (n, K) float32 taste logits with the dormant topic at ``-inf``; ``drift`` (n, days, K)
    float32 random walk; ``dormant`` (n,) the dormant topic; ``activity_z`` (n,) standard normal and
    ``activity`` (n,) ``exp(sigma * z - sigma^2 / 2)``.
    """
    k = cfg.dim
    step = cfg.drift / math.sqrt(max(days, 1))

    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        order = np.argsort(rng.random((n, k)), axis=1)  # a random topic permutation per user
        n_fav = rng.integers(1, cfg.favourite_topics + 1, size=n)
        base = rng.standard_normal((n, k)) * cfg.taste_noise
        rows = np.arange(n)
        for j in range(cfg.favourite_topics):
            boost = cfg.favourite_boost * max(1.0 - 0.2 * j, 0.2)
            base[rows, order[:, j]] += np.where(j < n_fav, boost, 0.0)
        dormant = order[:, cfg.favourite_topics]  # never a favourite
        base[rows, dormant] = -np.inf
        drift = np.cumsum(rng.standard_normal((n, days, k), dtype=np.float32), axis=1)
        drift *= np.float32(step)
        z = rng.standard_normal(n)
        s = cfg.activity_sigma
        return {
            "base": base.astype(np.float32),
            "drift": drift,
            "dormant": dormant.astype(np.int64),
            "activity_z": z,
            "activity": np.exp(s * z - 0.5 * s * s),
        }

    lat = per_user_blocks(cfg.seed, S_USERS, lo, hi, make)
    if cfg.dormant_period:  # a hash of (seed, user id): no draw from the streams above, which stay as they were
        u = hash_uniform(hash_key(cfg.seed, S_DORMANT_PHASE), np.arange(lo, hi, dtype=np.uint64))
        lat["phase"] = np.minimum((u * cfg.dormant_period).astype(np.int64), cfg.dormant_period - 1)
        if cfg.dormant_phase >= 0:
            lat["phase"][:] = cfg.dormant_phase
    return lat


def dormant_on_days(cfg: LatentConfig, lat: dict[str, np.ndarray], active: np.ndarray, u: np.ndarray,
                    t: np.ndarray) -> np.ndarray:
    """Bool per (local user ``u``, day ``t``): the dormant topic is active (the windows' ``active[t]``, or the
    user's periodic schedule when ``dormant_period > 0``)."""
    if cfg.dormant_period:
        return (t + lat["phase"][u]) % cfg.dormant_period < cfg.dormant_on
    return active[t]


def user_styles(cfg: LatentConfig, lo: int, hi: int) -> np.ndarray:
    """``(n, K)`` float32 standard normal action style of users ``[lo, hi)`` per topic (see
    :attr:`LatentConfig.style_strength`); a user's values do not depend on ``lo``/``hi``."""

    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {"style": rng.standard_normal((n, cfg.dim), dtype=np.float32)}

    return per_user_blocks(cfg.seed, S_USER_STYLE, lo, hi, make)["style"]


def rare_logit_correction(strength: float) -> float:
    """Logit shift that keeps the mean rate of a rare action when ``strength * N(0, 1)`` is added to its
    logit (for rare events ``sigmoid(b + x) ~ exp(b + x)`` and ``E exp(s z) = exp(s^2 / 2)``)."""
    return -0.5 * strength * strength


def dormant_active(cfg: LatentConfig, days: int) -> np.ndarray:
    """``(days,)`` bool: the days where the dormant topic is active (the early and the late window)."""
    early = int(round(cfg.dormant_early * days))
    late = int(round(cfg.dormant_late * days))
    t = np.arange(days)
    return (t < early) | (t >= days - late)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def topic_probs_at(
    cfg: LatentConfig, lat: dict[str, np.ndarray], active: np.ndarray, u: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """``P_u,t`` (len(u), K) float32 for local user indices ``u`` and day indices ``t``."""
    p = softmax_rows(lat["base"][u] + lat["drift"][u, t])
    s = np.float32(cfg.dormant_share)
    on = dormant_on_days(cfg, lat, active, u, t)
    if s > 0 and on.any():
        p[on] *= np.float32(1.0) - s
        idx = np.flatnonzero(on)
        p[idx, lat["dormant"][u[idx]]] += s
    return p


def topic_probs_all(cfg: LatentConfig, lat: dict[str, np.ndarray], days: int) -> np.ndarray:
    """``P_u,t`` for every local user and day: (n, days, K) float32."""
    n = lat["base"].shape[0]
    uu = np.repeat(np.arange(n), days)
    tt = np.tile(np.arange(days), n)
    return topic_probs_at(cfg, lat, dormant_active(cfg, days), uu, tt).reshape(n, days, cfg.dim)


def taste_vectors(lat: dict[str, np.ndarray], centroids: np.ndarray) -> np.ndarray:
    """Long-run user factors ``softmax(base) @ C`` (no drift, no dormant topic): (n, dim) float32."""
    return (softmax_rows(lat["base"]) @ centroids).astype(np.float32)


def sample_exposure_topics(p: np.ndarray, topic_mass: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Topic per draw with probability proportional to ``P_u,t(k) * W_k`` (``p`` is (n, K))."""
    q = p * topic_mass[None, :].astype(np.float32)
    return categorical(np.cumsum(q, axis=1), u)


def affinity(interest: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (n, dim) arrays."""
    return np.einsum("ij,ij->i", interest, vectors)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def scramble_ids(idx: np.ndarray, modulus_bits: int, mult: int, offset: int) -> np.ndarray:
    """A bijection of ``[0, 2**modulus_bits)`` that looks random (odd multiplier): stable fake ids."""
    mask = (1 << modulus_bits) - 1
    with np.errstate(over="ignore"):
        return ((idx.astype(np.uint64) * np.uint64(mult | 1) + np.uint64(offset)) & np.uint64(mask)).astype(np.int64)
