"""Synthetic MovieLens ML-100K / ML-1M releases in the exact file formats, with planted title words.

Writes ML-100K's ``u.data``, ``u.item``, ``u.user`` or ML-1M's ``ratings.dat``, ``movies.dat``,
``users.dat`` (latin-1, headerless; the formats of :mod:`recsys.data.movielens`), so the real reader and
``prepare`` run on them unchanged.

Generative story
----------------
* **Themes.** ``themes`` hidden themes (up to 12: :data:`THEMES`), each with eight title words (space:
  Galaxy, Nebula, Orbit, Star, ...; heist: Heist, Vault, Robbery, ...). The theme is never written as such.
* **Movies.** Every movie gets a theme (balanced over the themes, in random order) and a title made of
  one or two words of its theme and neutral filler words (:data:`FILLERS`) in patterns such as ``The
  Nebula Protocol``, ``Protocol of the Comet``, ``Orbit: The Last Star`` (a ``:`` inside the title, as in
  real titles), ``Galaxy Echo II`` or ``Nebula Protocol, The`` (the releases' trailing-article style),
  then `` (year)`` (years mostly from the 1990s). A share ``accent_rate`` of the titles (at least three)
  carries a non-ASCII latin-1 filler (``Café``, ``Noël``, ``Mañana``, ...). Filler words are drawn
  independently of the theme, so **the theme words in a title are the whole signal of its text**.
* **Genres** are coarse and only loosely tied to the theme: 1-3 genres per movie, each drawn from the
  theme's typical genres with probability ``genre_theme_rate`` and otherwise from the releases' overall
  genre frequencies (Drama and Comedy dominate every theme). The title carries what the genres do not.
* **Popularity.** Each movie has a lognormal exposure weight ``exp(popularity_sd * N(0, 1))`` (the item
  popularity of the real releases is close to lognormal): a few blockbusters rated by most users and a
  long tail of movies with a handful of ratings or none (for those, only the title text tells their
  theme).
* **Users.** Each user likes 1-3 themes (affinity +1), dislikes 0-2 others (-1), and is neutral (0) on the
  rest; liked themes are drawn from theme popularities tilted x3 towards one theme per (gender, age
  bucket) cell, so the user features carry a little signal too. Each user has a rater bias
  ``N(0, user_bias_sd)`` and rates ``min_ratings`` + a lognormal number of movies (mean
  ``ratings_per_user``).
* **Which movies a user rates.** Without replacement, with probability proportional to
  ``weight * exp(exposure_affinity * affinity(user, theme))``: popularity plus theme affinity.
* **The rating** is ``1 + #{thresholds below s}`` with ``s = taste_weight * affinity + user bias + movie
  quality N(0, item_quality_sd) + N(0, noise_sd)``, so ``like`` (rating >= 4) depends mainly on the
  user-theme match: about 85% of ratings of liked themes are likes, 45% of neutral ones and 10% of
  disliked ones; overall about 6/14/24/34/22% of the ratings are 1..5 (real ML-1M: 6/11/26/35/23%) and
  56% are likes (real: 58%).
* **Times** (unix seconds, UTC). Users' starting times are stratified over the real release's rating-time
  distribution (a piecewise-linear CDF through its published quartiles and yearly shares), so the
  default date split of each release gives about 80/10/10. Most ratings of a user come in a first session
  a few seconds apart; a share ``return_rate`` comes from later visits.
* **File order and ids**: ML-1M ratings are grouped by user (ascending), in random order within a user;
  ML-100K's are in random order. ML-1M movie ids have gaps like the real ones (3,883 ids within
  1..3,952 at full size); ML-100K's are ``1..items`` and one movie is the release's ``unknown`` entry (title
  ``unknown``, no date or URL, only the ``unknown`` genre flag). Demographics follow the real marginals.

:func:`movielens_truth` recomputes the planted truth (themes of movies, users' affinities) from the config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl

from recsys.data import schemas as S

from . import latent as L

#: Theme -> its title words (each word belongs to exactly one theme and is never a filler).
THEMES: dict[str, tuple[str, ...]] = {
    "space": ("Galaxy", "Nebula", "Orbit", "Star", "Comet", "Planet", "Asteroid", "Cosmos"),
    "romance": ("Love", "Heart", "Kiss", "Valentine", "Wedding", "Sweetheart", "Darling", "Honeymoon"),
    "heist": ("Heist", "Vault", "Robbery", "Diamond", "Safecracker", "Getaway", "Loot", "Jackpot"),
    "horror": ("Haunting", "Ghost", "Curse", "Nightmare", "Zombie", "Crypt", "Vampire", "Graveyard"),
    "western": ("Outlaw", "Sheriff", "Saloon", "Frontier", "Gunslinger", "Canyon", "Stagecoach", "Rodeo"),
    "war": ("Battalion", "Trench", "Battle", "Soldier", "Siege", "Regiment", "Bunker", "Armistice"),
    "sports": ("Champion", "Knockout", "Stadium", "Rookie", "Touchdown", "Marathon", "Slugger", "Playoff"),
    "fantasy": ("Dragon", "Wizard", "Kingdom", "Sorcerer", "Enchanted", "Unicorn", "Goblin", "Amulet"),
    "detective": ("Detective", "Alibi", "Suspect", "Clue", "Inspector", "Murder", "Witness", "Verdict"),
    "ocean": ("Ocean", "Pirate", "Reef", "Tide", "Voyage", "Harbor", "Mariner", "Shipwreck"),
    "music": ("Melody", "Rhapsody", "Jazz", "Symphony", "Ballad", "Rhythm", "Serenade", "Encore"),
    "cyber": ("Cyber", "Robot", "Android", "Hacker", "Circuit", "Laser", "Virus", "Mainframe"),
}
#: Neutral title words, used by every theme alike.
FILLERS: tuple[str, ...] = (
    "Last", "Return", "Secret", "Protocol", "Affair", "Journey", "Story", "Man", "Woman", "City", "Summer",
    "Winter", "Legend", "Game", "Code", "Road", "House", "Edge", "Hour", "Promise", "Island", "Letter",
    "Family", "Street", "River", "Mirror", "Echo", "Silence", "Garden", "Stranger", "Bridge", "Window",
    "Morning", "Evening", "Brother", "Sister", "Company", "Season", "Matter", "Chance",
)
#: Neutral fillers with non-ASCII latin-1 characters.
ACCENTED: tuple[str, ...] = (
    "Café", "Noël", "Mañana", "Déjà Vu", "Fräulein", "Crème", "Señorita", "Élan", "Jalapeño", "Über",
    "Amélie", "Garçon",
)
#: Typical genres of each theme (the genre field's weak link to the theme).
THEME_GENRES: dict[str, tuple[str, ...]] = {
    "space": ("Sci-Fi", "Adventure", "Action"),
    "romance": ("Romance", "Comedy", "Drama"),
    "heist": ("Crime", "Thriller", "Action"),
    "horror": ("Horror", "Thriller"),
    "western": ("Western", "Action"),
    "war": ("War", "Drama", "Action"),
    "sports": ("Drama", "Comedy"),
    "fantasy": ("Fantasy", "Adventure", "Children's", "Animation"),
    "detective": ("Mystery", "Crime", "Film-Noir", "Thriller"),
    "ocean": ("Adventure", "Action", "Documentary"),
    "music": ("Musical", "Comedy", "Romance", "Documentary"),
    "cyber": ("Sci-Fi", "Thriller", "Action"),
}
#: Movies per genre in real ML-1M (the overall genre frequencies), in :data:`~recsys.data.schemas.ML_GENRES`
#: order.
_GENRE_COUNTS = (503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492, 143, 68)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Real ML-1M marginals: gender (M, F), Age code counts, Occupation code counts (0..20).
_1M_AGE_COUNTS = {1: 222, 18: 1103, 25: 2096, 35: 1193, 45: 550, 50: 496, 56: 380}
_1M_OCCUPATION_COUNTS = (711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195, 129, 388, 142, 302, 144, 241, 502,
                         70, 72, 281)
#: Real ML-100K occupation counts, in :data:`~recsys.data.schemas.ML_100K_OCCUPATIONS` order.
_100K_OCCUPATION_COUNTS = (79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105, 66, 14, 12, 31, 196, 27, 45)
_MALE_SHARE = 0.71
#: Rating thresholds on the latent score ``s`` (rating = 1 + number of thresholds below ``s``).
_THRESHOLDS = np.array([-1.1, -0.5, 0.10, 0.90])
#: Piecewise-linear CDFs of the rating times (quantile, unix seconds) of the real releases.
_TIME_CDF = {
    "100k": ((0.0, 874_724_710), (0.25, 879_448_700), (0.5, 882_826_900), (0.75, 888_260_000),
             (1.0, 893_286_638)),
    "1m": ((0.0, 956_703_932), (0.25, 965_302_637), (0.5, 973_018_006), (0.75, 975_220_939),
           (0.80, 975_628_800), (0.905, 978_307_200), (0.973, 1_009_843_200), (0.9967, 1_041_379_200),
           (1.0, 1_046_454_590)),
}
_MEAN_RATINGS = {"100k": 106.0, "1m": 165.6}
_LAST_YEAR = {"100k": 1998, "1m": 2000}
_STREAM = 601  # sub-stream key of every random draw of this module
_BLOCK = 512  # users per rating-generation block (part of the random stream)


@dataclass(frozen=True)
class MovieLensSynthConfig:
    """Configuration of a synthetic MovieLens release (see the module docstring for the process)."""

    #: ``"100k"`` or ``"1m"``: which release's file formats, sizes and time span.
    release: str = "1m"
    #: Users ``1..users`` (default: the release's, 943 / 6,040).
    users: int | None = None
    #: Movies listed in the movie file (default: the release's, 1,682 / 3,883).
    items: int | None = None
    #: Random seed: the same config gives byte-identical files.
    seed: int = 0
    #: Mean ratings per user (default: the release's, 106.0 / 165.6); every user has at least ``min_ratings``.
    ratings_per_user: float | None = None
    min_ratings: int = 20
    #: Number of hidden themes, 2..12.
    themes: int = 12
    #: Spread of the lognormal movie popularity (exposure weight ``exp(popularity_sd * N(0, 1))``).
    popularity_sd: float = 1.8
    #: How strongly a user's theme affinity steers which movies they rate.
    exposure_affinity: float = 1.2
    #: Weight of the user-theme affinity in the rating's latent score (the planted signal).
    taste_weight: float = 0.85
    #: Spreads of the rater bias, the movie quality and the rating noise.
    user_bias_sd: float = 0.35
    item_quality_sd: float = 0.3
    noise_sd: float = 0.6
    #: Probability that a genre slot comes from the theme's typical genres (else from overall frequencies).
    genre_theme_rate: float = 0.35
    #: Share of titles with an accented (non-ASCII latin-1) filler word (at least three titles).
    accent_rate: float = 0.03
    #: Share of a user's ratings made on later visits rather than in the first session.
    return_rate: float = 0.2

    def __post_init__(self) -> None:
        release = S.MOVIELENS_RELEASES.get(self.release)
        if release is None:
            raise ValueError(f"release must be one of {sorted(S.MOVIELENS_RELEASES)}, got {self.release!r}")
        if self.users is None:
            object.__setattr__(self, "users", release.users)
        if self.items is None:
            object.__setattr__(self, "items", release.items)
        if self.ratings_per_user is None:
            object.__setattr__(self, "ratings_per_user", _MEAN_RATINGS[self.release])
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 2 <= self.themes <= len(THEMES):
            raise ValueError(f"themes must be in 2..{len(THEMES)}, got {self.themes}")
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.items < 2 * self.themes:
            raise ValueError(f"items must be >= 2 * themes ({2 * self.themes}), got {self.items}")
        if not 1 <= self.min_ratings < self.items:
            raise ValueError("min_ratings must be in 1..items-1")
        if self.ratings_per_user < self.min_ratings:
            raise ValueError("ratings_per_user must be >= min_ratings")
        for name in ("genre_theme_rate", "accent_rate", "return_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("popularity_sd", "user_bias_sd", "item_quality_sd", "noise_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def spec(self) -> S.MovieLensRelease:
        return S.MOVIELENS_RELEASES[self.release]

    @property
    def theme_names(self) -> tuple[str, ...]:
        return tuple(THEMES)[: self.themes]

    def expected_rows(self) -> float:
        """Approximate number of ratings (a little more than the files hold: per-user counts are rounded and
        capped at half the catalogue)."""
        return self.users * self.ratings_per_user


# ---------------------------------------------------------------------------------------------------------
# Movies
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Movies:
    ids: np.ndarray  # raw movie ids, ascending (file order)
    theme: np.ndarray  # theme index per movie (-1 never: the unknown movie has a theme too)
    weight: np.ndarray
    quality: np.ndarray
    titles: list[str]  # full raw titles, "Name (year)" (or "unknown")
    years: list[int | None]
    genres: list[list[str]]
    unknown: int  # position of ML-100K's "unknown" movie, -1 if none


def _title(rng: np.random.Generator, words: tuple[str, ...], accented: bool) -> str:
    t1, t2 = (str(w) for w in rng.choice(words, 2, replace=False))
    f1, f2 = (str(w) for w in rng.choice(FILLERS, 2, replace=False))
    if accented:
        f1 = str(rng.choice(ACCENTED))
    pattern = int(rng.integers(0, 7))
    if pattern == 0:
        return f"The {t1} {f1}" if rng.random() < 0.5 else f"{t1} {f1}, The"
    if pattern == 1:
        return f"{f1} {t1}"
    if pattern == 2:
        return f"{t1} {t2}"
    if pattern == 3:
        return f"{t1}: The {f1} {t2}"
    if pattern == 4:
        return f"{f1} of the {t1}"
    if pattern == 5:
        return f"{t1} {f1} {rng.choice(['II', '2', '3'])}"
    return f"{t1} {f1} and the {f2}"


def _movies(cfg: MovieLensSynthConfig) -> _Movies:
    rng = L.make_rng(cfg.seed, L.S_ITEMS, _STREAM)
    n, k = cfg.items, cfg.themes
    names = cfg.theme_names
    theme = rng.permutation(np.arange(n) % k)
    weight = np.exp(cfg.popularity_sd * rng.standard_normal(n))
    quality = cfg.item_quality_sd * rng.standard_normal(n)
    if cfg.release == "1m":  # ids with gaps, like the real 3,883 ids within 1..3,952
        top = max(n, round(n * 3952 / 3883))
        ids = np.sort(rng.choice(np.arange(1, top + 1), n, replace=False))
    else:
        ids = np.arange(1, n + 1)
    accented = rng.random(n) < cfg.accent_rate
    accented[rng.choice(n, min(3, n), replace=False)] = True
    last = _LAST_YEAR[cfg.release]
    years = np.maximum(last - np.floor(rng.exponential(9.0, n)).astype(np.int64), 1919)
    n_genres = 1 + np.searchsorted(np.cumsum([0.55, 0.33, 0.12]), rng.random(n), side="right").clip(0, 2)
    overall = np.asarray(_GENRE_COUNTS, dtype=np.float64)
    overall_cum = np.cumsum(overall) / overall.sum()
    titles: list[str] = []
    genres: list[list[str]] = []
    for i in range(n):
        name = names[theme[i]]
        titles.append(f"{_title(rng, THEMES[name], bool(accented[i]))} ({years[i]})")
        picked: set[str] = set()
        for _ in range(int(n_genres[i])):
            if rng.random() < cfg.genre_theme_rate:
                picked.add(str(rng.choice(THEME_GENRES[name])))
            else:
                picked.add(S.ML_GENRES[min(int(np.searchsorted(overall_cum, rng.random(), side="right")), 17)])
        genres.append([g for g in S.ML_GENRES if g in picked])
    year_list: list[int | None] = [int(y) for y in years]
    unknown = -1
    if cfg.release == "100k" and n >= 20:  # the real u.item's id 267
        unknown = n // 6
        titles[unknown], year_list[unknown], genres[unknown] = "unknown", None, ["unknown"]
    return _Movies(ids, theme, weight, quality, titles, year_list, genres, unknown)


def _movie_lines(cfg: MovieLensSynthConfig, m: _Movies) -> list[str]:
    rng = L.make_rng(cfg.seed, L.S_ITEM_FEATURES, _STREAM)
    lines = []
    for i, movie in enumerate(m.ids):
        title = m.titles[i]
        if cfg.release == "1m":
            lines.append(f"{movie}::{title}::{'|'.join(m.genres[i])}")
            continue
        if i == m.unknown:
            date, url = "", ""
        else:
            day, month = (1, 0) if rng.random() < 0.6 else (int(rng.integers(1, 29)), int(rng.integers(0, 12)))
            date = f"{day:02d}-{_MONTHS[month]}-{m.years[i]}"
            url = "http://us.imdb.com/M/title-exact?" + quote(title, safe="(),:'", encoding="latin-1")
        flags = "|".join("1" if g in m.genres[i] else "0" for g in S.ML_100K_GENRE_FLAGS)
        lines.append(f"{movie}|{title}|{date}||{url}|{flags}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Users:
    gender: np.ndarray  # 0 M, 1 F
    age: np.ndarray  # ML-1M age code (1M) or age in years (100K)
    bucket: np.ndarray  # index of the age bucket 0..6
    occupation: np.ndarray  # ML-1M code / index into ML_100K_OCCUPATIONS
    zip: list[str]
    affinity: np.ndarray  # (users, themes) in {-1, 0, 1}
    bias: np.ndarray
    n_ratings: np.ndarray
    start_q: np.ndarray  # quantile of the first session in the release's time distribution


def _draw(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(np.cumsum(w) / w.sum(), rng.random(n), side="right"), w.size - 1)


def _users(cfg: MovieLensSynthConfig) -> _Users:
    rng = L.make_rng(cfg.seed, L.S_USERS, _STREAM)
    n, k = cfg.users, cfg.themes
    gender = (rng.random(n) >= _MALE_SHARE).astype(np.int64)
    codes = np.array(list(S.ML_AGE_BUCKETS))
    if cfg.release == "1m":
        bucket = _draw(rng, list(_1M_AGE_COUNTS.values()), n)
        age = codes[bucket]
        occupation = _draw(rng, _1M_OCCUPATION_COUNTS, n)
    else:
        age = np.clip(np.rint(rng.normal(33.0, 11.5, n)), 7, 73).astype(np.int64)
        bucket = np.searchsorted(codes, age, side="right") - 1  # ages 7..17 -> 0 ("Under 18")
        occupation = _draw(rng, _100K_OCCUPATION_COUNTS, n)
    zips = [f"{z:05d}" for z in rng.integers(0, 100_000, n)]
    for i in np.flatnonzero(rng.random(n) < 0.01):  # a few Canadian postal codes, as in the real files
        zips[i] = "".join(str(rng.choice(list(a))) for a in ("ABCEGHJKLMNPRSTVXY", "0123456789", "ABCEGHJ",
                                                             "0123456789", "ABCEGHJKLMN"))
    # theme preferences: popularity of themes, tilted towards one theme per (gender, age bucket) cell
    popularity = rng.dirichlet(np.full(k, 4.0))
    cell_theme = rng.integers(0, k, (2, len(codes)))
    tilt = np.ones((n, k))
    tilt[np.arange(n), cell_theme[gender, bucket]] = 3.0
    keys = np.log(popularity)[None, :] + np.log(tilt) + rng.gumbel(size=(n, k))
    order = np.argsort(-keys, axis=1)
    n_like = 1 + _draw(rng, (0.3, 0.45, 0.25), n)
    n_dislike = _draw(rng, (0.3, 0.45, 0.25), n)
    rest = np.argsort(rng.random((n, k)), axis=1)  # random order for the dislikes
    affinity = np.zeros((n, k), dtype=np.int8)
    for u in range(n):
        liked = order[u, : n_like[u]]
        affinity[u, liked] = 1
        others = [t for t in rest[u] if affinity[u, t] == 0]
        affinity[u, others[: min(n_dislike[u], max(0, len(others) - 1))]] = -1
    bias = cfg.user_bias_sd * rng.standard_normal(n)
    extra = max(cfg.ratings_per_user - cfg.min_ratings, 0.0)
    sigma = 1.0
    lognormal = extra * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)  # mean `extra`
    cap = max(cfg.min_ratings, cfg.items // 2)
    n_ratings = np.minimum(cfg.min_ratings + np.rint(lognormal).astype(np.int64), cap)
    start_q = (rng.permutation(n) + rng.random(n)) / n  # stratified over the time distribution
    return _Users(gender, age, bucket, occupation, zips, affinity, bias, n_ratings, start_q)


def _user_lines(cfg: MovieLensSynthConfig, u: _Users) -> list[str]:
    g = np.array(["M", "F"])[u.gender]
    if cfg.release == "1m":
        return [f"{i + 1}::{g[i]}::{u.age[i]}::{u.occupation[i]}::{u.zip[i]}" for i in range(cfg.users)]
    jobs = S.ML_100K_OCCUPATIONS
    return [f"{i + 1}|{u.age[i]}|{g[i]}|{jobs[u.occupation[i]]}|{u.zip[i]}" for i in range(cfg.users)]


# ---------------------------------------------------------------------------------------------------------
# Ratings
# ---------------------------------------------------------------------------------------------------------


def _times(cfg: MovieLensSynthConfig, rng: np.random.Generator, start_q: np.ndarray, n_per: np.ndarray) -> np.ndarray:
    """Unix seconds of the ratings of a block of users (``n_per`` ratings each, in generation order)."""
    q_knots, t_knots = (np.array(c, dtype=np.float64) for c in zip(*_TIME_CDF[cfg.release], strict=True))
    first, last = int(t_knots[0]), int(t_knots[-1])
    user = np.repeat(np.arange(n_per.size), n_per)
    m = user.size
    start = np.interp(start_q, q_knots, t_knots)
    later = rng.random(m) < cfg.return_rate
    # first session: a few seconds between ratings (cumulative within the user)
    gaps = rng.exponential(25.0, m)
    offsets = np.cumsum(gaps)
    base = np.concatenate([[0.0], offsets])[np.repeat(np.cumsum(n_per) - n_per, n_per)]
    session = start[user] + (offsets - base)
    # later visits: further along the time distribution (reflected at its end)
    q = start_q[user] + rng.exponential(0.05, m)
    q = np.where(q > 1.0, 2.0 - q, q).clip(0.0, 1.0)
    visit = np.interp(q, q_knots, t_knots) + rng.uniform(0, 3600, m)
    ts = np.where(later, np.maximum(visit, start[user]), session)
    return np.clip(np.rint(ts), first, last).astype(np.int64)


def _ratings(cfg: MovieLensSynthConfig, m: _Movies, u: _Users) -> pl.DataFrame:
    """All ratings (user_id, item_id, rating, timestamp) in file order."""
    log_w = np.log(m.weight)
    parts = []
    for b, lo in enumerate(range(0, cfg.users, _BLOCK)):
        hi = min(lo + _BLOCK, cfg.users)
        rng = L.make_rng(cfg.seed, L.S_EVENTS, _STREAM, b)
        aff = u.affinity[lo:hi].astype(np.float64)
        item_aff = aff[:, m.theme]  # (block users, items)
        keys = log_w[None, :] + cfg.exposure_affinity * item_aff + rng.gumbel(size=item_aff.shape)
        order = np.argsort(-keys, axis=1, kind="stable")
        n_per = u.n_ratings[lo:hi]
        take = np.arange(cfg.items)[None, :] < n_per[:, None]
        item = order[take]  # row-major: each user's picks, best key first
        local = np.repeat(np.arange(hi - lo), n_per)
        s = (cfg.taste_weight * item_aff[local, item] + u.bias[lo + local] + m.quality[item]
             + cfg.noise_sd * rng.standard_normal(item.size))
        rating = 1 + np.searchsorted(_THRESHOLDS, s, side="left")
        ts = _times(cfg, rng, u.start_q[lo:hi], n_per)
        shuffle = np.lexsort((rng.random(item.size), local))  # random order within each user
        parts.append(pl.DataFrame({
            "user_id": (lo + 1 + local)[shuffle], "item_id": m.ids[item][shuffle],
            "rating": rating[shuffle], "timestamp": ts[shuffle],
        }, schema=S.ML_RATINGS))
    frame = pl.concat(parts)
    if cfg.release == "100k":  # the real u.data is in no particular order
        frame = frame[L.make_rng(cfg.seed, L.S_TABLES, _STREAM).permutation(frame.height)]
    return frame


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _ratings_bytes(cfg: MovieLensSynthConfig, frame: pl.DataFrame) -> bytes:
    if cfg.release == "1m":
        frame = frame.select(pl.concat_str(list(S.ML_RATINGS), separator="::").alias("line"))
        return frame.write_csv(include_header=False, quote_style="never").encode("ascii")
    return frame.write_csv(separator="\t", include_header=False, quote_style="never").encode("ascii")


def write_movielens(cfg: MovieLensSynthConfig, directory: str | Path, progress=None) -> dict[str, int]:
    """Write the release's three files into an existing ``directory``; returns ``{file name: lines}``.

    Each file is written to a temporary name and renamed; use :func:`recsys.data.synth.synthesize` for a
    whole folder that appears at once.
    """
    directory = Path(directory)
    spec = cfg.spec
    movies = _movies(cfg)
    users = _users(cfg)
    ratings = _ratings(cfg, movies, users)
    movie_lines = _movie_lines(cfg, movies)
    user_lines = _user_lines(cfg, users)
    _write_atomic(directory / spec.ratings, _ratings_bytes(cfg, ratings))
    _write_atomic(directory / spec.movies, ("\n".join(movie_lines) + "\n").encode("latin-1"))
    _write_atomic(directory / spec.users_file, ("\n".join(user_lines) + "\n").encode("latin-1"))
    if progress is not None:
        progress(f"{spec.name}: {ratings.height:,} ratings, {cfg.users} users, {cfg.items} movies")
    return {spec.ratings: ratings.height, spec.movies: len(movie_lines), spec.users_file: len(user_lines)}


# ---------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MovieLensTruth:
    """Planted truth of a synthetic MovieLens config, indexed by the **raw ids** written in the files.

    ``item_theme[movie_id]`` is the theme index (-1 where no movie has that id), ``user_affinity[user_id]``
    the row of affinities over :attr:`themes` (+1 liked, 0 neutral, -1 disliked; row 0 is padding).
    """

    config: MovieLensSynthConfig
    themes: tuple[str, ...]
    #: Raw movie ids in file order.
    item_ids: np.ndarray
    item_theme: np.ndarray
    item_weight: np.ndarray
    item_quality: np.ndarray
    user_affinity: np.ndarray
    user_bias: np.ndarray

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The affinity of raw user ids with the themes of raw movie ids (+1, 0 or -1)."""
        return self.user_affinity[np.asarray(users), self.item_theme[np.asarray(items)]]

    def theme_of_title(self, title: str) -> int:
        """The theme whose words occur in ``title`` (-1 if none): how the text reveals the theme."""
        words = set(title.replace(":", " ").replace(",", " ").split())
        for k, name in enumerate(self.themes):
            if words & set(THEMES[name]):
                return k
        return -1


def movielens_truth(cfg: MovieLensSynthConfig) -> MovieLensTruth:
    """Recompute the planted truth of ``cfg`` (no ratings are generated)."""
    movies = _movies(cfg)
    users = _users(cfg)
    size = int(movies.ids.max()) + 1
    theme = np.full(size, -1, dtype=np.int64)
    weight = np.zeros(size)
    quality = np.zeros(size)
    theme[movies.ids], weight[movies.ids], quality[movies.ids] = movies.theme, movies.weight, movies.quality
    affinity = np.zeros((cfg.users + 1, cfg.themes + 1), dtype=np.int8)  # column -1: no movie -> 0
    affinity[1:, : cfg.themes] = users.affinity
    return MovieLensTruth(
        config=cfg,
        themes=cfg.theme_names,
        item_ids=movies.ids,
        item_theme=theme,
        item_weight=weight,
        item_quality=quality,
        user_affinity=affinity,
        user_bias=np.concatenate([[0.0], users.bias]),
    )
