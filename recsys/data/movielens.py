"""Reader of the MovieLens ML-100K and ML-1M releases (GroupLens, University of Minnesota).

Point it at the release's folder (``ml-100k/`` or ``ml-1m/``) or at the folder that contains it. The files
are headerless latin-1 text:

- ML-100K: ``u.data`` (``user id<TAB>item id<TAB>rating<TAB>timestamp``), ``u.item`` (``movie id|movie
  title|release date|video release date|IMDb URL|`` then 19 genre flags 0/1) and ``u.user`` (``user
  id|age|gender|occupation|zip code``, the age in years, the occupation a word);
- ML-1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat`` (``MovieID::Title::
  Genres``, the genres ``|``-joined; titles may hold ``:`` but never ``::``) and ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``, the age and occupation as codes).

Prepared dataset:

- **Events**: one per rating. ``actions`` bit 0 ``rate`` (always set), bit 1 ``like`` (rating >= 4, the
  positives); the rating itself is kept as the ``rating`` event column (UInt8, 1..5). ``ts`` is the
  timestamp (unix seconds) in epoch ms, ``day`` its **UTC** date (``utc_offset_hours = 0``). Users rate
  many movies within the same second, so ties are ordered by item index (the common tie rule).
- **Items**: ``title`` (categorical: the title without its trailing `` (year)``, so the vocabulary's raw
  value is the title text and ``f"{title} ({year})"`` the raw title), ``year`` (Int16, from the title's
  trailing ``(yyyy)``, null when it has none) and ``genres`` (a list of genre names; ML-100K's flag ``unknown`` is the
  genre name ``"unknown"``).
- **Users**: ``gender`` (``"M"``/``"F"``), ``age`` (the ML-1M bucket label such as ``"25-34"``; ML-100K's
  integer ages are put in the same buckets) and ``occupation`` (ML-1M: the code's name such as
  ``"technician/engineer"``; ML-100K: the word as written, such as ``"technician"``). Zip codes are not kept.
- **Default split**: fixed UTC days (see :data:`~recsys.data.schemas.MOVIELENS_RELEASES`): ML-100K trains
  up to 1998-03-07, validates 03-08..03-31 and tests April 1998; ML-1M trains up to 2000-11-30, validates
  December 2000 and tests 2001-01-01..2003-02-28 (about 80/10/10 of the ratings in both).

Every line is validated before anything is written: a bad line raises a :class:`DataError` naming the
file, the line, the field (by the README's name) and what was expected, e.g. a ``ratings.dat`` with tabs
or single ``:`` separators, a ``u.data`` with ``::``, a rating outside 1..5, a non-integer id, a movie or
user id missing from the movie / user file, or a file that is UTF-16 or holds NUL bytes. A side file that
is valid UTF-8 with non-ASCII characters (a re-encoded copy) is read as UTF-8; otherwise as latin-1.

>>> src = MovieLensSource(Path("raw/ml-1m"), "1m")
>>> src.dataset, [p.name for p in src.input_files()]
('movielens-1m', ['ratings.dat', 'movies.dat', 'users.dat'])
>>> split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
('City of Lost Children, The (Cité des enfants perdus, La)', 1995)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.data.dates import epoch_ms_to_yyyymmdd
from recsys.data.errors import DataError
from recsys.data.schemas import (
    ML_1M_OCCUPATIONS,
    ML_100K_GENRE_FLAGS,
    ML_ACTIONS,
    ML_AGE_BUCKETS,
    ML_GENRES,
    ML_LIKE_MIN_RATING,
    ML_RATINGS,
    ML_UTC_OFFSET_HOURS,
    MOVIELENS_RELEASES,
    MovieLensRelease,
)
from recsys.data.source import SideTable

_U32_MAX = (1 << 32) - 1
#: Timestamps must be unix seconds in 1970..2099.
_TS_MAX = 4_102_444_800
_TITLE_YEAR = re.compile(r"^(.*?)\s*\(([0-9]{4})\)\s*$")
_UINT = re.compile(r"[0-9]+")
#: ML-100K integer age -> ML-1M bucket code (lower bounds of the buckets).
_AGE_LOWER = (0, 18, 25, 35, 45, 50, 56)
_SEP_NAME = {"::": "'::'", "\t": "tab", "|": "'|'"}


def resolve_release(name: str) -> MovieLensRelease:
    """``"100k"``, ``"1m"``, ``"ml-1m"`` or the dataset names ``"movielens-100k"``, ... -> the release."""
    key = name.lower().removeprefix("movielens-").removeprefix("movielens").removeprefix("ml-")
    if key not in MOVIELENS_RELEASES:
        raise ValueError(f"unknown MovieLens release {name!r}: expected one of 100k, 1m")
    return MOVIELENS_RELEASES[key]


def split_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; a title without a trailing ``(yyyy)`` keeps no year."""
    m = _TITLE_YEAR.match(raw)
    if m is None or not m.group(1).strip():
        return raw.strip(), None
    return m.group(1).strip(), int(m.group(2))


def age_bucket(age: int) -> str:
    """An age in years -> the ML-1M age bucket label (``17`` -> ``"Under 18"``, ``30`` -> ``"25-34"``)."""
    code = 1
    for lower, bucket in zip(_AGE_LOWER, ML_AGE_BUCKETS, strict=True):
        if age >= lower:
            code = bucket
    return ML_AGE_BUCKETS[code]


def decode_text(path: Path, data: bytes) -> str:
    """The text of a MovieLens file: latin-1 (or UTF-8 when it is valid UTF-8 with non-ASCII characters);
    a UTF-16 file or NUL bytes raise a :class:`DataError`."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(path, "the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark): "
                              "expected latin-1 text as in the MovieLens release")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(path, "NUL byte in the file: expected latin-1 text as in the MovieLens release "
                              "(is the file UTF-16 or binary?)", line=data.count(b"\n", 0, nul) + 1)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(path, f"starts with a UTF-8 byte-order mark but is not valid UTF-8 ({e.reason})",
                            line=data.count(b"\n", 0, e.start) + 1) from None
    if not data.isascii():
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a small text file as ``(1-based line number, text without the line end)``."""
    text = decode_text(path, path.read_bytes())
    out = [(n, line.removesuffix("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    out = [(n, line) for n, line in out if line]
    if not out:
        raise DataError(path, "the file is empty: expected one line per record")
    return out


@dataclass
class _Fields:
    """The fields of one line of a headerless file, with located errors."""

    path: Path
    line: int
    names: tuple[str, ...]
    values: list[str]

    def error(self, message: str, name: str | None = None) -> DataError:
        return DataError(self.path, message, line=self.line, column=name)

    def text(self, i: int) -> str:
        return self.values[i]

    def uint(self, i: int, what: str = "a non-negative integer id", hi: int = _U32_MAX) -> int:
        value = self.values[i]
        if not _UINT.fullmatch(value) or int(value) > hi:
            raise self.error(f"expected {what}, got {value!r}", self.names[i])
        return int(value)

    def choice(self, i: int, allowed: dict | tuple, what: str) -> str:
        value = self.values[i]
        if value not in allowed:
            raise self.error(f"expected {what}, got {value!r}", self.names[i])
        return value


def _split_fields(path: Path, n: int, line: str, sep: str, names: tuple[str, ...], layout: str) -> _Fields:
    parts = line.split(sep)
    if len(parts) != len(names):
        hint = ""
        if sep != "::" and "::" in line:
            hint = " (the line uses '::' separators, as ML-1M's files do)"
        elif sep == "::" and "::" not in line and "|" in line:
            hint = " (the line uses '|' separators, as ML-100K's files do)"
        elif sep == "::" and "\t" in line:
            hint = " (the line uses tabs)"
        raise DataError(path, f"expected {len(names)} {_SEP_NAME[sep]}-separated fields ({layout}), got "
                              f"{len(parts)}{hint}", line=n)
    return _Fields(path, n, names, parts)


def _check_unique(path: Path, seen: dict[int, int], key: int, n: int, name: str) -> None:
    if key in seen:
        raise DataError(path, f"duplicate {name} {key} (first on line {seen[key]})", line=n, column=name)
    seen[key] = n


@dataclass
class MovieLensSource:
    """One MovieLens release under ``root`` (its ``ml-100k/`` / ``ml-1m/`` folder, or the folder holding it)."""

    root: Path
    release_name: str = "1m"

    actions = ML_ACTIONS
    utc_offset_hours = ML_UTC_OFFSET_HOURS
    order_key = ("day", "user", "ts", "item")
    merge_on = None
    user_column = "user_id"
    item_column = "item_id"
    item_columns_in_log = ()
    rows_per_bucket = 16_000_000  # four narrow columns
    log_schema = ML_RATINGS
    read_schema = {"user_id": pl.UInt32(), "item_id": pl.UInt32(), "rating": pl.UInt8(), "timestamp": pl.Int64()}
    null_values = ()
    #: Value rules are enforced by :meth:`check`, which validates every ratings line with its line number
    #: (the generic CSV locator does not know headerless ``::``/tab files).
    checks = ()

    _items: pl.DataFrame | None = field(default=None, init=False, repr=False)
    _users: pl.DataFrame | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.release = resolve_release(self.release_name)
        self.dataset = self.release.name
        root = Path(self.root)
        nested = root / self.release.folder
        self.root = nested if nested.is_dir() and not (root / self.release.ratings).exists() else root
        self.bytes_per_row = 20 if self.release.ratings_separator == "\t" else 25  # the real files' averages

    # -- files ---------------------------------------------------------------------------------------------

    @property
    def ratings_path(self) -> Path:
        return self.root / self.release.ratings

    def log_files(self) -> list[Path]:
        return [self.ratings_path]

    def input_files(self) -> list[Path]:
        return [self.root / name for name in self.release.files]

    def check(self) -> None:
        """Validate every file completely (a located :class:`DataError` on the first bad line)."""
        rel = self.release
        expected = f"{rel.ratings}, {rel.movies} and {rel.users_file}"
        if not self.root.is_dir():
            raise DataError(self.root, f"folder not found: expected the {rel.folder}/ folder of {rel.name} "
                                       f"(holding {expected})")
        missing = [p.name for p in self.input_files() if not p.is_file()]
        if missing:
            raise DataError(self.root, f"missing file(s) of {rel.name}: {', '.join(missing)} (the {rel.folder}/ "
                                       f"folder must hold {expected})")
        self._items = self._read_items()
        self._users = self._read_users()
        validate_ratings(self.ratings_path, rel, self._items["item_id"], self._users["user_id"])

    # -- ratings -------------------------------------------------------------------------------------------

    def scan_logs(self) -> pl.LazyFrame:
        """The ratings as ``user_id, item_id, rating, timestamp`` (lazily; :meth:`check` validated them).

        ML-1M's ``::`` separator is two one-byte separators: the scan sees 7 columns, the even ones empty.
        """
        sep = self.release.ratings_separator
        if sep == "::":
            schema = {"user_id": pl.UInt32(), "_s1": pl.String(), "item_id": pl.UInt32(), "_s2": pl.String(),
                      "rating": pl.UInt8(), "_s3": pl.String(), "timestamp": pl.Int64()}
            sep = ":"
        else:
            schema = dict(self.read_schema)
        scan = pl.scan_csv(self.ratings_path, separator=sep, has_header=False, schema=schema, quote_char=None,
                           raise_if_empty=True, glob=False)
        # blank lines read as all-null rows
        return scan.select(list(self.read_schema)).filter(pl.col("user_id").is_not_null())

    def normalize(self, raw: pl.DataFrame) -> pl.DataFrame:
        ts = pl.col("timestamp") * 1000
        return raw.select(
            "user",
            "item",
            ts.alias("ts"),
            epoch_ms_to_yyyymmdd(ts, utc_offset_hours=self.utc_offset_hours).alias("day"),
            pl.when(pl.col("rating") >= ML_LIKE_MIN_RATING).then(3).otherwise(1).cast(pl.UInt16).alias("actions"),
            pl.col("rating").cast(pl.UInt8),
        )

    def finish_events(self, events: pl.DataFrame) -> pl.DataFrame:
        return events

    # -- side tables ---------------------------------------------------------------------------------------

    def item_features(self, log_items: pl.DataFrame | None) -> SideTable:
        """``title`` (categorical, without the year), ``genres`` (list of names) and ``year`` (Int16)."""
        items = self._items if self._items is not None else self._read_items()
        return SideTable(items, categorical={"title": "title"}, lists={"genres": "genres"}, numeric=("year",))

    def user_features(self) -> SideTable:
        """``gender``, ``age`` (bucket label) and ``occupation`` (name), all categorical."""
        users = self._users if self._users is not None else self._read_users()
        return SideTable(users, categorical={"gender": "gender", "age": "age", "occupation": "occupation"})

    def default_split(self) -> tuple[int, int]:
        """ML-100K: train <= 1998-03-07, valid 03-08..03-31, test April 1998; ML-1M: train <= 2000-11-30,
        valid December 2000, test 2001-01-01..2003-02-28 (UTC days; about 80/10/10 of the ratings)."""
        return self.release.train_end, self.release.valid_end

    def _read_items(self) -> pl.DataFrame:
        rel = self.release
        path = self.root / rel.movies
        sep = rel.side_separator
        hundred_k = sep == "|"
        layout = ("movie id|movie title|release date|video release date|IMDb URL|19 genre flags" if hundred_k
                  else "MovieID::Title::Genres")
        ids: list[int] = []
        titles: list[str] = []
        years: list[int | None] = []
        genres: list[list[str]] = []
        seen: dict[int, int] = {}
        flag_names = rel.movie_fields[5:]
        for n, line in _lines(path):
            f = _split_fields(path, n, line, sep, rel.movie_fields, layout)
            movie = f.uint(0)
            _check_unique(path, seen, movie, n, rel.movie_fields[0])
            title, year = split_title(f.text(1))
            if hundred_k:
                flags = [f.choice(5 + k, ("0", "1"), "a genre flag 0 or 1") for k in range(len(flag_names))]
                names = [g for g, flag in zip(ML_100K_GENRE_FLAGS, flags, strict=True) if flag == "1"]
            else:
                names = [] if f.text(2) in ("", "(no genres listed)") else f.text(2).split("|")
                for g in names:
                    if g not in ML_GENRES:
                        raise f.error(f"expected genre names separated by '|' from {', '.join(ML_GENRES)}; "
                                      f"got {g!r}", "Genres")
            ids.append(movie)
            titles.append(title)
            years.append(year)
            genres.append(names)
        return pl.DataFrame(
            {"item_id": ids, "title": titles, "year": years, "genres": genres},
            schema={"item_id": pl.UInt32(), "title": pl.String(), "year": pl.Int16(), "genres": pl.List(pl.String())},
        )

    def _read_users(self) -> pl.DataFrame:
        rel = self.release
        path = self.root / rel.users_file
        sep = rel.side_separator
        hundred_k = sep == "|"
        layout = "user id|age|gender|occupation|zip code" if hundred_k else "UserID::Gender::Age::Occupation::Zip-code"
        rows: list[tuple[int, str, str, str]] = []
        seen: dict[int, int] = {}
        ages = {str(code): label for code, label in ML_AGE_BUCKETS.items()}
        jobs = {str(code): name for code, name in ML_1M_OCCUPATIONS.items()}
        for n, line in _lines(path):
            f = _split_fields(path, n, line, sep, rel.user_fields, layout)
            user = f.uint(0)
            _check_unique(path, seen, user, n, rel.user_fields[0])
            if hundred_k:
                age = age_bucket(f.uint(1, "an age in years 0..150", hi=150))
                gender = f.choice(2, ("M", "F"), "M or F")
                job = f.text(3).strip()
                if not job:
                    raise f.error("expected an occupation word (e.g. 'technician'), got an empty field", "occupation")
            else:
                gender = f.choice(1, ("M", "F"), "M or F")
                age = ages[f.choice(2, ages, "an age code in " + ", ".join(ages))]
                job = jobs[f.choice(3, jobs, "an occupation code in 0..20")]
            rows.append((user, gender, age, job))
        return pl.DataFrame(rows, schema={"user_id": pl.UInt32(), "gender": pl.String(), "age": pl.String(),
                                          "occupation": pl.String()}, orient="row")


# ---------------------------------------------------------------------------------------------------------
# Ratings validation: vectorised over the whole file, then one line explained in Python.
# ---------------------------------------------------------------------------------------------------------


def ratings_format(release: MovieLensRelease) -> str:
    """How a ratings line looks, for messages: ``UserID::MovieID::Rating::Timestamp``."""
    if release.ratings_separator == "\t":
        return " <tab> ".join(release.rating_fields) + " (tab-separated)"
    return release.ratings_separator.join(release.rating_fields)


def validate_ratings(
    path: Path, release: MovieLensRelease, movie_ids: pl.Series | None = None, user_ids: pl.Series | None = None
) -> int:
    """Check every line of a ratings file; return the number of ratings.

    Lines must be four non-negative integers joined by the release's separator, the rating in 1..5 and the
    timestamp unix seconds in 1970..2099; with ``movie_ids`` / ``user_ids`` every id must be listed there.
    Blank lines are skipped. The first bad line raises a :class:`DataError` with its line and field.
    """
    text = decode_text(path, path.read_bytes())
    fmt = ratings_format(release)
    lines = pl.Series("line", [text.removesuffix("\n")], dtype=pl.String).str.split("\n").explode()
    del text
    body = pl.col("line").str.strip_suffix("\r")
    sep = r"\t" if release.ratings_separator == "\t" else "::"
    pattern = rf"^([0-9]+){sep}([0-9]+){sep}([0-9]+){sep}([0-9]+)$"
    fields = lines.to_frame().select(
        (body == "").alias("blank"),
        body.str.extract_groups(pattern).struct.rename_fields(["u", "i", "r", "t"]).alias("g"),
    ).unnest("g").with_columns(pl.col("u", "i", "r", "t").cast(pl.Int64, strict=False))
    u, i, r, t = (pl.col(c) for c in ("u", "i", "r", "t"))
    ok = (u <= _U32_MAX) & (i <= _U32_MAX) & r.is_between(1, 5) & t.is_between(0, _TS_MAX - 1)
    if movie_ids is not None:
        ok = ok & i.is_in(movie_ids.cast(pl.Int64).implode())
    if user_ids is not None:
        ok = ok & u.is_in(user_ids.cast(pl.Int64).implode())
    checked = fields.select("blank", (ok.fill_null(False) | pl.col("blank")).alias("ok"))
    bad = int(checked["ok"].arg_min()) if not checked["ok"].all() else -1
    if bad >= 0:
        raise _explain(path, release, bad + 1, lines[bad].removesuffix("\r"), fmt, movie_ids, user_ids)
    rows = int((~checked["blank"]).sum())
    if rows == 0:
        raise DataError(path, f"no ratings in the file: expected lines {fmt}")
    return rows


def _explain(
    path: Path, release: MovieLensRelease, n: int, line: str, fmt: str,
    movie_ids: pl.Series | None, user_ids: pl.Series | None,
) -> DataError:
    """The :class:`DataError` for one bad ratings line."""
    sep = release.ratings_separator
    names = release.rating_fields
    parts = line.split(sep)
    if len(parts) != 4:
        if sep == "::" and "\t" in line:
            what = "tab-separated fields (the ML-100K u.data layout)"
        elif sep == "::" and "::" not in line and ":" in line:
            what = "fields separated by single ':'"
        elif sep == "\t" and "::" in line:
            what = "'::'-separated fields (the ML-1M ratings.dat layout)"
        elif sep not in line and "," in line:
            what = "comma-separated fields"
        elif sep not in line and " " in line:
            what = "space-separated fields"
        else:
            what = f"{len(parts)} field(s)"
        return DataError(path, f"expected {fmt}, got {what}: {line[:80]!r}", line=n)
    for k, (name, value) in enumerate(zip(names, parts, strict=True)):
        if not _UINT.fullmatch(value):
            return DataError(path, f"expected a non-negative integer, got {value!r} (a line is {fmt})", line=n,
                             column=name)
        v = int(value)
        if k < 2 and v > _U32_MAX:
            return DataError(path, f"expected an integer id in 0..{_U32_MAX}, got {value!r}", line=n, column=name)
        if k == 2 and not 1 <= v <= 5:
            return DataError(path, f"expected a rating in 1..5, got {value!r}", line=n, column=name)
        if k == 3 and not 0 <= v < _TS_MAX:
            return DataError(path, f"expected unix seconds in 1970..2099, got {value!r}", line=n, column=name)
    if user_ids is not None and not (user_ids == int(parts[0])).any():
        return DataError(path, f"user {parts[0]} is not in {release.users_file}", line=n, column=names[0])
    if movie_ids is not None and not (movie_ids == int(parts[1])).any():
        return DataError(path, f"movie {parts[1]} is not in {release.movies}", line=n, column=names[1])
    return DataError(path, f"expected {fmt}, got {line[:80]!r}", line=n)
