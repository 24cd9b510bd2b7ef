"""Exact schemas of the public raw files: column names, order and dtypes.

These are the formats of the files as the public releases ship them (see the KuaiRand README and the
IJCAI-15 Tianchi description). Readers validate headers against them and synthetic generators write them,
so a single definition serves both directions.

A schema is an ordered ``dict`` of column name -> polars dtype: the dtype a reader parses the column as,
and the dtype a writer formats it from (``Float64`` columns are written like Python ``repr``: ``0.0``).

>>> list(KUAIRAND_LOG)[:5]
['user_id', 'video_id', 'date', 'hourmin', 'time_ms']
>>> KUAIRAND_RELEASES["pure"].standard_logs
('log_standard_4_08_to_4_21_pure.csv', 'log_standard_4_22_to_5_08_pure.csv')
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

Schema = dict[str, pl.DataType]

# ---------------------------------------------------------------------------------------------------------
# KuaiRand (Gao et al., CIKM 2022). Three releases with identical schemas.
# ---------------------------------------------------------------------------------------------------------

#: The 19 columns of every ``log_standard_*`` / ``log_random_*`` file, all int64, no missing values.
KUAIRAND_LOG: Schema = {
    name: pl.Int64()
    for name in (
        "user_id", "video_id", "date", "hourmin", "time_ms",
        "is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate", "long_view",
        "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
        "is_rand", "tab",
    )
}

#: KuaiRand's 0/1 feedback flags, in the bit order of the prepared ``actions`` bitmask.
KUAIRAND_ACTIONS: tuple[str, ...] = (
    "click", "long_view", "like", "follow", "comment", "forward", "hate", "profile_enter",
)
#: Raw log column of each action.
KUAIRAND_ACTION_COLUMNS: dict[str, str] = {
    "click": "is_click", "long_view": "long_view", "like": "is_like", "follow": "is_follow",
    "comment": "is_comment", "forward": "is_forward", "hate": "is_hate", "profile_enter": "is_profile_enter",
}

_ONEHOT_FLOAT = {4, 12, 13, 14, 15, 16, 17}  # onehot_feat4 and 12..17 are float64 with empty = missing

KUAIRAND_USER_FEATURES: Schema = {
    "user_id": pl.Int64(),
    "user_active_degree": pl.String(),
    "is_lowactive_period": pl.Int64(),
    "is_live_streamer": pl.Int64(),  # {-124, 1}; -124 is the missing sentinel
    "is_video_author": pl.Int64(),
    "follow_user_num": pl.Int64(),
    "follow_user_num_range": pl.String(),
    "fans_user_num": pl.Int64(),
    "fans_user_num_range": pl.String(),
    "friend_user_num": pl.Int64(),
    "friend_user_num_range": pl.String(),
    "register_days": pl.Int64(),
    "register_days_range": pl.String(),
    **{f"onehot_feat{i}": (pl.Float64() if i in _ONEHOT_FLOAT else pl.Int64()) for i in range(18)},
}

#: The missing-value sentinel of some KuaiRand integer features.
KUAIRAND_SENTINEL = -124

KUAIRAND_VIDEO_BASIC: Schema = {
    "video_id": pl.Int64(),
    "author_id": pl.Int64(),
    "video_type": pl.String(),  # NORMAL, AD, UNKNOWN
    "upload_dt": pl.String(),  # yyyy-mm-dd
    "upload_type": pl.String(),
    "visible_status": pl.Float64(),
    "video_duration": pl.Float64(),  # ms, may be empty
    "server_width": pl.Float64(),
    "server_height": pl.Float64(),
    "music_id": pl.Int64(),  # 0 = none
    "music_type": pl.Float64(),  # may be empty
    "tag": pl.String(),  # comma-joined ints, quoted when it holds a comma, may be empty
}

#: The 50 float64 statistics after ``video_id, counts``, in file order.
KUAIRAND_VIDEO_STATISTIC_FLOATS: tuple[str, ...] = (
    "show_cnt", "show_user_num", "play_cnt", "play_user_num", "play_duration", "complete_play_cnt",
    "complete_play_user_num", "valid_play_cnt", "valid_play_user_num", "long_time_play_cnt",
    "long_time_play_user_num", "short_time_play_cnt", "short_time_play_user_num", "play_progress",
    "comment_stay_duration", "like_cnt", "like_user_num", "click_like_cnt", "double_click_cnt",
    "cancel_like_cnt", "cancel_like_user_num", "comment_cnt", "comment_user_num", "direct_comment_cnt",
    "reply_comment_cnt", "delete_comment_cnt", "delete_comment_user_num", "comment_like_cnt",
    "comment_like_user_num", "follow_cnt", "follow_user_num", "cancel_follow_cnt", "cancel_follow_user_num",
    "share_cnt", "share_user_num", "download_cnt", "download_user_num", "report_cnt", "report_user_num",
    "reduce_similar_cnt", "reduce_similar_user_num", "collect_cnt", "collect_user_num", "cancel_collect_cnt",
    "cancel_collect_user_num", "direct_comment_user_num", "reply_comment_user_num", "share_all_cnt",
    "share_all_user_num", "outsite_share_all_cnt",
)
KUAIRAND_VIDEO_STATISTIC: Schema = {
    "video_id": pl.Int64(),
    "counts": pl.Int64(),
    **{name: pl.Float64() for name in KUAIRAND_VIDEO_STATISTIC_FLOATS},
}


@dataclass(frozen=True)
class KuaiRandRelease:
    """File names of one KuaiRand release, relative to its ``data/`` folder."""

    name: str
    standard_logs: tuple[str, ...]
    random_logs: tuple[str, ...]
    user_features: str
    video_basic: tuple[str, ...]
    video_statistic: tuple[str, ...]
    #: Published sizes, for documentation and the full-size synthetic default. ``items`` is the number of
    #: videos in the standard logs (Pure: 7,551); the basic feature file lists a few more (Pure: 7,583).
    users: int
    items: int
    standard_rows: int

    @property
    def logs(self) -> tuple[str, ...]:
        return self.standard_logs + self.random_logs

    @property
    def files(self) -> tuple[str, ...]:
        return self.logs + (self.user_features,) + self.video_basic + self.video_statistic


def _kuairand_release(name: str, suffix: str, users: int, items: int, rows: int) -> KuaiRandRelease:
    if suffix == "27k":
        standard = tuple(
            f"log_standard_{span}_27k_part{p}.csv" for span in ("4_08_to_4_21", "4_22_to_5_08") for p in (1, 2)
        )
        statistic = tuple(f"video_features_statistic_27k_part{p}.csv" for p in (1, 2, 3))
    else:
        standard = (f"log_standard_4_08_to_4_21_{suffix}.csv", f"log_standard_4_22_to_5_08_{suffix}.csv")
        statistic = (f"video_features_statistic_{suffix}.csv",)
    return KuaiRandRelease(
        name=name,
        standard_logs=standard,
        random_logs=(f"log_random_4_22_to_5_08_{suffix}.csv",),
        user_features=f"user_features_{suffix}.csv",
        video_basic=(f"video_features_basic_{suffix}.csv",),
        video_statistic=statistic,
        users=users,
        items=items,
        standard_rows=rows,
    )


KUAIRAND_RELEASES: dict[str, KuaiRandRelease] = {
    "pure": _kuairand_release("kuairand-pure", "pure", 27_285, 7_551, 1_436_609),
    "1k": _kuairand_release("kuairand-1k", "1k", 1_000, 4_369_953, 11_713_045),
    "27k": _kuairand_release("kuairand-27k", "27k", 27_285, 32_038_725, 322_278_385),
}

#: The usual KuaiRand date split (inclusive yyyymmdd bounds).
KUAIRAND_SPLIT = {"train_end": 20220421, "valid_end": 20220428, "test_end": 20220508}
KUAIRAND_UTC_OFFSET_HOURS = 8  # `date` is the UTC+8 date of `time_ms`

# ---------------------------------------------------------------------------------------------------------
# Tmall, IJCAI-15 "Repeat Buyers Prediction" (Tianchi), data_format1.
# ---------------------------------------------------------------------------------------------------------

TMALL_USER_LOG_FILE = "user_log_format1.csv"
TMALL_USER_INFO_FILE = "user_info_format1.csv"
TMALL_TRAIN_FILE = "train_format1.csv"
TMALL_TEST_FILE = "test_format1.csv"

TMALL_USER_LOG: Schema = {
    "user_id": pl.Int64(),
    "item_id": pl.Int64(),
    "cat_id": pl.Int64(),
    "seller_id": pl.Int64(),
    "brand_id": pl.Int64(),  # empty or NULL when missing
    "time_stamp": pl.Int64(),  # mmdd without a year, written 829 or 0829
    "action_type": pl.Int64(),  # 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite
}
TMALL_USER_INFO: Schema = {
    "user_id": pl.Int64(),
    "age_range": pl.Int64(),  # 0..8, 0 or missing = unknown
    "gender": pl.Int64(),  # 0 female, 1 male, 2 or missing = unknown
}
TMALL_TRAIN: Schema = {"user_id": pl.Int64(), "merchant_id": pl.Int64(), "label": pl.Int64()}
TMALL_TEST: Schema = {"user_id": pl.Int64(), "merchant_id": pl.Int64(), "prob": pl.Float64()}

#: Raw ``action_type`` code -> action name.
TMALL_ACTION_TYPES: dict[int, str] = {0: "click", 1: "cart", 2: "purchase", 3: "favourite"}
#: Tmall's actions in funnel order: the bit order of the prepared ``actions`` bitmask.
TMALL_ACTIONS: tuple[str, ...] = ("click", "favourite", "cart", "purchase")
#: Published release sizes.
# The Tianchi 2014 "Rec Tmall" log (Tianchi_2014002_Rec_Tmall_Log): see recsys.data.tmall_rec.
TMALL_REC_LOG: Schema = {"item_id": pl.Int64(), "user_id": pl.Int64(), "action": pl.String(), "vtime": pl.String()}
#: Its action names -> the toolkit's Tmall action names (TMALL_ACTIONS).
TMALL_REC_ACTIONS: dict[str, str] = {"click": "click", "collect": "favourite", "cart": "cart", "alipay": "purchase"}
#: The file name the synthetic generator writes (the real parts are found by their header).
TMALL_REC_LOG_FILE = "tianchi_2014002_rec_tmall_log.csv"

TMALL_ROWS = 54_925_330
TMALL_USERS = 424_170
TMALL_ITEMS = 1_090_390
TMALL_DEFAULT_YEAR = 2014  # the six months up to Double 11 2014 (the contest ran in 2015, before 11-11-2015)


def csv_header(schema: Schema) -> str:
    """The exact header line (without the newline) of a file with this schema."""
    return ",".join(schema)


# ---------------------------------------------------------------------------------------------------------
# MovieLens ML-100K and ML-1M (GroupLens; F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History
# and Context", ACM TiiS 2015). Headerless latin-1 text files; see recsys.data.movielens.
# ---------------------------------------------------------------------------------------------------------

#: The 18 genre names of ML-1M ``movies.dat`` (and of ML-100K after ``unknown``), in the releases' order.
ML_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: The 19 binary genre flags at the end of every ML-100K ``u.item`` line, in file order.
ML_100K_GENRE_FLAGS: tuple[str, ...] = ("unknown", *ML_GENRES)

#: ML-1M ``users.dat`` Age bucket code -> label. ML-100K's integer ages are put in the same buckets.
ML_AGE_BUCKETS: dict[int, str] = {
    1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+",
}
#: ML-1M ``users.dat`` Occupation code -> name.
ML_1M_OCCUPATIONS: dict[int, str] = {
    0: "other or not specified", 1: "academic/educator", 2: "artist", 3: "clerical/admin",
    4: "college/grad student", 5: "customer service", 6: "doctor/health care", 7: "executive/managerial",
    8: "farmer", 9: "homemaker", 10: "K-12 student", 11: "lawyer", 12: "programmer", 13: "retired",
    14: "sales/marketing", 15: "scientist", 16: "self-employed", 17: "technician/engineer",
    18: "tradesman/craftsman", 19: "unemployed", 20: "writer",
}
#: The 21 occupation words of ML-100K (its ``u.occupation`` file), as they appear in ``u.user``.
ML_100K_OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
)

#: Prepared MovieLens actions, in bitmask order: every rating is a ``rate`` event (bit 0), ``like`` (bit 1)
#: when the rating is at least :data:`ML_LIKE_MIN_RATING`.
ML_ACTIONS: tuple[str, ...] = ("rate", "like")
ML_LIKE_MIN_RATING = 4
#: Timestamps are unix seconds (UTC); prepared ``day`` is the UTC calendar date.
ML_UTC_OFFSET_HOURS = 0

#: The columns of a ratings file (``u.data`` / ``ratings.dat``), in file order: all integers, no header.
ML_RATINGS: Schema = {"user_id": pl.Int64(), "item_id": pl.Int64(), "rating": pl.Int64(), "timestamp": pl.Int64()}


@dataclass(frozen=True)
class MovieLensRelease:
    """File names, field layout, published sizes and the default date split of one MovieLens release."""

    name: str  # the dataset name, e.g. "movielens-1m"
    folder: str  # the folder the release's zip unpacks to, e.g. "ml-1m"
    ratings: str
    movies: str
    users_file: str
    #: Field separator of the ratings file ("\t" or "::") and of the movie / user files ("|" or "::").
    ratings_separator: str
    side_separator: str
    #: The ratings fields as the release's README names them (error messages use these names).
    rating_fields: tuple[str, str, str, str]
    movie_fields: tuple[str, ...]
    user_fields: tuple[str, ...]
    #: Published sizes: users, movies listed in the movie file, rating rows.
    users: int
    items: int
    ratings_rows: int
    #: Unix seconds of the first and last rating of the real release.
    first_ts: int
    last_ts: int
    #: Default split (inclusive yyyymmdd bounds, UTC days): see ``MovieLensSource.default_split``.
    train_end: int
    valid_end: int

    @property
    def files(self) -> tuple[str, ...]:
        return (self.ratings, self.movies, self.users_file)


_ML_100K_ITEM_FIELDS = ("movie id", "movie title", "release date", "video release date", "IMDb URL",
                       *(f"genre {g}" for g in ML_100K_GENRE_FLAGS))

MOVIELENS_RELEASES: dict[str, MovieLensRelease] = {
    "100k": MovieLensRelease(
        name="movielens-100k", folder="ml-100k", ratings="u.data", movies="u.item", users_file="u.user",
        ratings_separator="\t", side_separator="|",
        rating_fields=("user id", "item id", "rating", "timestamp"),
        movie_fields=_ML_100K_ITEM_FIELDS,
        user_fields=("user id", "age", "gender", "occupation", "zip code"),
        users=943, items=1_682, ratings_rows=100_000,
        first_ts=874_724_710, last_ts=893_286_638,  # 1997-09-20 03:05:10 .. 1998-04-22 23:10:38 UTC
        # Published timestamp quartiles 1997-11-13, 1997-12-22, 1998-02-23 and a steady rate after them
        # put about 80% of the ratings up to 1998-03-07 and 90% up to 1998-03-31.
        train_end=19980307, valid_end=19980331,
    ),
    "1m": MovieLensRelease(
        name="movielens-1m", folder="ml-1m", ratings="ratings.dat", movies="movies.dat", users_file="users.dat",
        ratings_separator="::", side_separator="::",
        rating_fields=("UserID", "MovieID", "Rating", "Timestamp"),
        movie_fields=("MovieID", "Title", "Genres"),
        user_fields=("UserID", "Gender", "Age", "Occupation", "Zip-code"),
        users=6_040, items=3_883, ratings_rows=1_000_209,
        first_ts=956_703_932, last_ts=1_046_454_590,  # 2000-04-25 23:05:32 .. 2003-02-28 17:49:50 UTC
        # Quartiles 2000-08-03, 2000-10-31, 2000-11-26; about 90.5% of the ratings are from 2000: train up
        # to November 2000 (~80%), validation December 2000 (~10%), test 2001-01-01..2003-02-28 (~9.5%).
        train_end=20001130, valid_end=20001231,
    ),
}
