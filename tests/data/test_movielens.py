"""MovieLens ML-100K / ML-1M: the readers on hand-written files in the exact formats, synth -> prepare round
trips, located errors on bad input, and the planted title words of the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.cli import main as cli_main
from recsys.data import PreparedDataset
from recsys.data.errors import DataError
from recsys.data.manifest import Manifest
from recsys.data.movielens import MovieLensSource, age_bucket, split_title
from recsys.data.prepare import PrepareOptions, make_source, prepare
from recsys.data.schemas import ML_GENRES, MOVIELENS_RELEASES
from recsys.data.synth import THEMES, movielens_truth, synthesize


def quiet(_: str) -> None:
    pass


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


# --- hand-written files in the exact release formats ------------------------------------------------------

ML1M_RATINGS = [
    "1::1193::5::978300760",  # 2000-12-31 UTC
    "1::661::3::978302109",
    "1::2355::4::975000000",  # 2000-11-23
    "2::1193::4::978824291",  # 2001-01-06
    "2::2355::2::1009843300",  # 2002-01-01
    "3::661::5::976000000",  # 2000-12-05
]
ML1M_MOVIES = [
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
    "2355::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi",
    "3000::Misérables, Les (1995)::Drama|Musical",  # never rated
]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]

ML100K_DATA = [
    "1\t1\t5\t874965758",  # 1997-09-22
    "1\t2\t3\t876893171",
    "2\t1\t4\t888550871",  # 1998-02-27
    "2\t267\t1\t889500000",  # 1998-03-10
    "3\t3\t4\t890000000",  # 1998-03-15
    "3\t2\t2\t892000000",  # 1998-04-08
]


def _flags(*names: str) -> str:
    order = ("unknown", *ML_GENRES)
    return "|".join("1" if g in names else "0" for g in order)


_TOY_STORY_GENRES = _flags("Animation", "Children's", "Comedy")
ML100K_ITEM = [
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{_TOY_STORY_GENRES}",
    f"2|Amélie: A Fable (1998)|01-Jan-1998||http://us.imdb.com/M/title-exact?Am%E9lie|{_flags('Comedy', 'Romance')}",
    f"3|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{_flags('Comedy')}",
    f"267|unknown||||{_flags('unknown')}",
]
ML100K_USER = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|17|M|writer|32067"]


def ml1m_folder(root: Path, ratings=None, movies=None, users=None) -> Path:
    raw = root / "ml-1m"
    raw.mkdir(parents=True, exist_ok=True)
    write_lines(raw / "ratings.dat", ML1M_RATINGS if ratings is None else ratings)
    write_lines(raw / "movies.dat", ML1M_MOVIES if movies is None else movies)
    write_lines(raw / "users.dat", ML1M_USERS if users is None else users)
    return raw


def ml100k_folder(root: Path, data=None, item=None, user=None) -> Path:
    raw = root / "ml-100k"
    raw.mkdir(parents=True, exist_ok=True)
    write_lines(raw / "u.data", ML100K_DATA if data is None else data)
    write_lines(raw / "u.item", ML100K_ITEM if item is None else item)
    write_lines(raw / "u.user", ML100K_USER if user is None else user)
    return raw


def decoded(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Events, items and users of a prepared dataset with every index mapped back to its raw value."""
    ds = PreparedDataset(out)

    def raw(name: str) -> list:
        return [None, *ds.vocab(name).raw.to_list()]

    def col(frame: pl.DataFrame, name: str, vocab: str | None = None) -> list:
        table = raw(vocab or name)
        return [table[i] for i in frame[name].to_list()]

    ev = pl.read_parquet(out / "events" / "*.parquet")
    items = ds.items().filter(pl.col("item") > 0)
    users = ds.users().filter(pl.col("user") > 0)
    genres = raw("genres")
    items = items.with_columns(
        pl.Series("title", col(items, "title"), dtype=pl.String),
        pl.Series("genres", [[genres[g] for g in gs] for gs in items["genres"].to_list()], dtype=pl.List(pl.String)),
    )
    users = users.with_columns(*(pl.Series(c, col(users, c), dtype=pl.String) for c in ("gender", "age", "occupation")))
    ev = ev.with_columns(
        pl.Series("user_id", col(ev, "user"), dtype=pl.Int64),
        pl.Series("item_id", col(ev, "item"), dtype=pl.Int64),
    )
    return ev, items, users


def test_title_and_age_helpers():
    assert split_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title("Star Wars: Episode IV - A New Hope (1977)") == ("Star Wars: Episode IV - A New Hope", 1977)
    assert split_title("unknown") == ("unknown", None)
    assert [age_bucket(a) for a in (7, 17, 18, 24, 25, 44, 45, 49, 50, 55, 56, 73)] == [
        "Under 18", "Under 18", "18-24", "18-24", "25-34", "35-44", "45-49", "45-49", "50-55", "50-55", "56+", "56+"]


def test_ml1m_reader_on_exact_files(tmp_path):
    ml1m_folder(tmp_path / "raw")
    out = tmp_path / "out"
    m = prepare(make_source("movielens-1m", tmp_path / "raw"), out, log=quiet)  # the folder holding ml-1m/
    assert m.dataset == "movielens-1m" and m.actions == ["rate", "like"]
    assert m.rows["events"] == len(ML1M_RATINGS) and m.extra["utc_offset_hours"] == 0
    assert m.split["train_end"] == 20001130 and m.split["valid_end"] == 20001231
    assert m.split["counts"] == {"train": 1, "valid": 3, "test": 2}
    assert m.columns["events"]["rating"] == "UInt8" and m.columns["items"]["year"] == "Int16"
    assert m.columns["items"]["genres"] == "List(UInt32)" and m.columns["users"]["age"] == "UInt32"
    ev, items, users = decoded(out)
    got = ev.select("user_id", "item_id", "rating", "like", "rate", "ts", "day").sort("user_id", "ts")
    assert got.rows() == [
        (1, 2355, 4, True, True, 975000000000, 20001123),
        (1, 1193, 5, True, True, 978300760000, 20001231),
        (1, 661, 3, False, True, 978302109000, 20001231),
        (2, 1193, 4, True, True, 978824291000, 20010106),
        (2, 2355, 2, False, True, 1009843300000, 20020101),
        (3, 661, 5, True, True, 976000000000, 20001205),
    ]
    assert (ev["actions"] == 1 + 2 * ev["like"].cast(pl.UInt16)).all()
    by_id = {r["item_id"]: r for r in items.to_dicts()}
    assert set(by_id) == {661, 1193, 2355}  # the unrated movie has no index
    assert by_id[2355]["title"] == "Star Wars: Episode IV - A New Hope" and by_id[2355]["year"] == 1977
    assert by_id[2355]["genres"] == ["Action", "Adventure", "Fantasy", "Sci-Fi"]
    assert by_id[1193]["title"] == "One Flew Over the Cuckoo's Nest"
    users = {r["user_id"]: (r["gender"], r["age"], r["occupation"]) for r in users.to_dicts()}
    assert users == {1: ("F", "Under 18", "K-12 student"), 2: ("M", "56+", "self-employed"),
                     3: ("M", "25-34", "scientist")}


def test_ml1m_latin1_title(tmp_path):
    ratings = [*ML1M_RATINGS, "3::3000::4::976000001"]
    raw = ml1m_folder(tmp_path, ratings=ratings)
    assert b"Mis\xe9rables" in (raw / "movies.dat").read_bytes()  # latin-1 on disk
    prepare(make_source("movielens-1m", raw), tmp_path / "out", log=quiet)
    _, items, _ = decoded(tmp_path / "out")
    assert items.filter(pl.col("item_id") == 3000)["title"].item() == "Misérables, Les"


def test_ml100k_reader_on_exact_files(tmp_path):
    raw = ml100k_folder(tmp_path)
    out = tmp_path / "out"
    m = prepare(make_source("movielens-100k", raw), out, log=quiet)
    assert m.dataset == "movielens-100k" and m.rows["events"] == 6
    assert m.split["counts"] == {"train": 3, "valid": 2, "test": 1}  # <= 1998-03-07, <= 03-31, April
    ev, items, users = decoded(out)
    assert ev.sort("user_id", "ts").select("user_id", "item_id", "rating", "like").rows() == [
        (1, 1, 5, True), (1, 2, 3, False), (2, 1, 4, True), (2, 267, 1, False), (3, 3, 4, True), (3, 2, 2, False)]
    by_id = {r["item_id"]: r for r in items.to_dicts()}
    assert (by_id[2]["title"], by_id[2]["year"]) == ("Amélie: A Fable", 1998)
    assert by_id[2]["genres"] == ["Comedy", "Romance"]
    assert (by_id[267]["title"], by_id[267]["year"], by_id[267]["genres"]) == ("unknown", None, ["unknown"])
    assert by_id[1]["genres"] == ["Animation", "Children's", "Comedy"]
    users = {r["user_id"]: (r["gender"], r["age"], r["occupation"]) for r in users.to_dicts()}
    assert users == {1: ("M", "18-24", "technician"), 2: ("F", "50-55", "other"), 3: ("M", "Under 18", "writer")}


# --- synthetic releases through prepare -------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_1m(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ml") / "ml-1m"
    synthesize("movielens-1m", out, users=300, items=400, seed=3)
    return out


@pytest.fixture(scope="module")
def synth_100k(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ml") / "ml-100k"
    synthesize("movielens-100k", out, users=150, items=250, seed=3)
    return out


def read_ratings(raw: Path, release: str) -> pl.DataFrame:
    return MovieLensSource(raw, release).scan_logs().collect()


def raw_titles(raw: Path, release: str) -> dict[int, str]:
    spec = MOVIELENS_RELEASES[release]
    sep = spec.side_separator
    lines = (raw / spec.movies).read_bytes().decode("latin-1").splitlines()
    return {int(line.split(sep)[0]): line.split(sep)[1] for line in lines}


@pytest.mark.parametrize("release", ["100k", "1m"])
def test_synth_prepare_round_trip(release, synth_1m, synth_100k, tmp_path):
    raw = synth_1m if release == "1m" else synth_100k
    spec = MOVIELENS_RELEASES[release]
    assert sorted(p.name for p in raw.iterdir()) == sorted(spec.files)
    out = tmp_path / "out"
    m = prepare(make_source(spec.name, raw), out, log=quiet)
    ratings = read_ratings(raw, release)
    assert m.rows["read"] == m.rows["events"] == ratings.height > 0
    assert all(n > 0 for n in m.split["counts"].values()), m.split
    ev, items, users = decoded(out)
    assert ev["rate"].all() and (ev["like"] == (ev["rating"] >= 4)).all()
    joined = ev.join(ratings.cast({"user_id": pl.Int64, "item_id": pl.Int64}), on=["user_id", "item_id"])
    assert joined.height == ev.height and (joined["rating"] == joined["rating_right"]).all()
    assert (joined["ts"] == joined["timestamp"] * 1000).all()
    # the title vocabulary and the year give back the raw title strings
    titles = raw_titles(raw, release)
    for row in items.iter_rows(named=True):
        expected = row["title"] if row["year"] is None else f"{row['title']} ({row['year']})"
        assert titles[row["item_id"]] == expected
    assert any(not t.isascii() for t in items["title"].to_list())
    assert items.height == ratings["item_id"].n_unique() and users.height == ratings["user_id"].n_unique()
    assert set(users["gender"]) <= {"M", "F"} and users["age"].null_count() == 0
    assert set(items["genres"].explode().drop_nulls()) <= {"unknown", *ML_GENRES}


def test_bucketed_prepare_matches_in_memory(synth_1m, tmp_path):
    src = make_source("movielens-1m", synth_1m)
    prepare(src, tmp_path / "a", log=quiet)
    prepare(make_source("movielens-1m", synth_1m), tmp_path / "b", PrepareOptions(rows_per_bucket=5000), log=quiet)
    a = pl.read_parquet(tmp_path / "a" / "events" / "*.parquet").sort("user", "ts", "item")
    b = pl.read_parquet(tmp_path / "b" / "events" / "*.parquet").sort("user", "ts", "item")
    assert Manifest.read(tmp_path / "b").extra["buckets"] > 1 and a.equals(b)


def test_synth_is_deterministic_by_seed(tmp_path):
    def files(seed: int, name: str) -> dict[str, bytes]:
        out = tmp_path / name
        synthesize("movielens-100k", out, users=40, items=60, seed=seed)
        return {p.name: p.read_bytes() for p in out.iterdir()}

    a, b, c = files(5, "a"), files(5, "b"), files(6, "c")
    assert a == b and a["u.data"] != c["u.data"] and a["u.item"] != c["u.item"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left"


def test_synth_exact_formats(synth_1m, synth_100k):
    for line in (synth_1m / "ratings.dat").read_text("latin-1").splitlines()[:50]:
        u, i, r, t = line.split("::")
        assert u.isdigit() and i.isdigit() and r in "12345" and t.isdigit()
    movies = (synth_1m / "movies.dat").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        movies.decode("utf-8")  # latin-1 bytes, as the real file
    for line in movies.decode("latin-1").splitlines():
        _, title, genres = line.split("::")
        assert title.endswith(")") and set(genres.split("|")) <= set(ML_GENRES)
    assert any(":" in t for t in raw_titles(synth_1m, "1m").values())
    for line in (synth_100k / "u.item").read_text("latin-1").splitlines():
        fields = line.split("|")
        assert len(fields) == 24 and set(fields[5:]) <= {"0", "1"} and fields[3] == ""
    for line in (synth_100k / "u.data").read_text("latin-1").splitlines()[:50]:
        assert len(line.split("\t")) == 4
    for line in (synth_100k / "u.user").read_text("latin-1").splitlines():
        _, age, gender, job, _ = line.split("|")
        assert 7 <= int(age) <= 73 and gender in "MF" and job.isalpha()


def test_planted_title_words_drive_likes(synth_1m):
    from recsys.data.synth import make_config

    truth = movielens_truth(make_config("movielens-1m", users=300, items=400, seed=3))
    titles = raw_titles(synth_1m, "1m")
    # the text alone names the theme: every title holds words of exactly its own theme
    words = {name: set(ws) for name, ws in THEMES.items()}
    text_theme = {}
    for movie, title in titles.items():
        tokens = set(title.replace(":", " ").replace(",", " ").split())
        hits = [k for k, name in enumerate(truth.themes) if tokens & words[name]]
        assert hits == [truth.item_theme[movie]], title
        text_theme[movie] = hits[0]
    ratings = read_ratings(synth_1m, "1m")
    users = ratings["user_id"].to_numpy()
    themes = np.array([text_theme[i] for i in ratings["item_id"].to_list()])
    like = ratings["rating"].to_numpy() >= 4
    match = truth.user_affinity[users, themes]
    liked, neutral, disliked = (like[match == v].mean() for v in (1, 0, -1))
    assert liked > 0.75 and neutral < 0.55 and disliked < 0.25 and liked - neutral > 0.3, (liked, neutral, disliked)
    # genres are only loosely tied to the theme: no theme is mostly one genre
    genres = {int(line.split("::")[0]): line.split("::")[2].split("|")
              for line in (synth_1m / "movies.dat").read_text("latin-1").splitlines()}
    for k in range(len(truth.themes)):
        ms = [g for movie, g in genres.items() if text_theme[movie] == k]
        top = max(sum(g in gs for gs in ms) for g in ML_GENRES) / len(ms)
        assert top < 0.75
    # a long tail: some movies have few ratings (their text is most of what is known about them), while
    # the top tenth holds well over a tenth of the ratings
    counts = np.sort(ratings.group_by("item_id").len()["len"].to_numpy())[::-1]
    assert (counts <= 5).sum() + (len(titles) - counts.size) >= 0.05 * len(titles)
    assert counts[: len(titles) // 10].sum() > 0.25 * counts.sum()


def test_cli_synth_and_prepare(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert cli_main(["data", "synth", "--dataset", "movielens-1m", "--out", str(raw), "--users", "30",
                     "--items", "60"]) == 0
    assert cli_main(["data", "prepare", "--dataset", "movielens-1m", "--raw", str(raw), "--out", str(out)]) == 0
    assert Manifest.read(out).dataset == "movielens-1m"
    assert cli_main(["data", "synth", "--dataset", "movielens-100k", "--out", str(tmp_path / "x"), "--days", "3"]) == 1


# --- bad input --------------------------------------------------------------------------------------------


def prepare_error(raw: Path, out: Path, dataset: str) -> DataError:
    with pytest.raises(DataError) as info:
        prepare(make_source(dataset, raw), out, log=quiet)
    assert not out.exists(), "no output may be left behind"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")], "temporary folder left"
    return info.value


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("1\t661\t3\t978302109", None, "tab-separated fields"),
        ("1:661:3:978302109", None, "single ':'"),
        ("1::661::6::978302109", "Rating", "expected a rating in 1..5, got '6'"),
        ("1::x7::3::978302109", "MovieID", "expected a non-negative integer, got 'x7'"),
        ("1::661::3::97830.5", "Timestamp", "expected a non-negative integer, got '97830.5'"),
        ("-1::661::3::978302109", "UserID", "expected a non-negative integer, got '-1'"),
        ("1::9999::3::978302109", "MovieID", "movie 9999 is not in movies.dat"),
        ("7::661::3::978302109", "UserID", "user 7 is not in users.dat"),
        ("1::661::3", None, "expected UserID::MovieID::Rating::Timestamp, got 3 field(s)"),
    ],
)
def test_bad_ratings_dat_names_file_line_and_field(tmp_path, line, column, words):
    raw = ml1m_folder(tmp_path, ratings=[*ML1M_RATINGS[:2], line, *ML1M_RATINGS[2:]])
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert (Path(err.path).name, err.line, err.column) == ("ratings.dat", 3, column)
    assert words in str(err) and "ratings.dat:3" in str(err)


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("1::661::3::978302109", None, "'::'-separated fields (the ML-1M ratings.dat layout)"),
        ("1\t2\t0\t876893171", "rating", "expected a rating in 1..5, got '0'"),
        ("1\t2.0\t3\t876893171", "item id", "expected a non-negative integer, got '2.0'"),
        ("1 2 3 876893171", None, "got space-separated fields"),
    ],
)
def test_bad_u_data(tmp_path, line, column, words):
    raw = ml100k_folder(tmp_path, data=[ML100K_DATA[0], line])
    err = prepare_error(raw, tmp_path / "out", "movielens-100k")
    assert (Path(err.path).name, err.line, err.column) == ("u.data", 2, column)
    assert words in str(err)


def test_bad_side_files(tmp_path):
    raw = ml1m_folder(tmp_path, movies=[*ML1M_MOVIES[:2], "2355::Star Wars (1977)::Sci-fi"])
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert (Path(err.path).name, err.line, err.column) == ("movies.dat", 3, "Genres") and "'Sci-fi'" in str(err)
    raw = ml1m_folder(tmp_path, movies=ML1M_MOVIES, users=["1::F::1::10::48067", "2::M::30::16::70072"])
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert (Path(err.path).name, err.line, err.column) == ("users.dat", 2, "Age") and "an age code in 1, 18" in str(err)
    raw = ml1m_folder(tmp_path, users=["1::F::1::10::48067", "2|M|56|16|70072"])
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert (Path(err.path).name, err.line) == ("users.dat", 2) and "'|' separators" in str(err)
    raw = ml100k_folder(tmp_path, item=[ML100K_ITEM[0], "2|Too Short (1998)|01-Jan-1998||url|0|1"])
    err = prepare_error(raw, tmp_path / "out", "movielens-100k")
    assert (Path(err.path).name, err.line) == ("u.item", 2) and "expected 24 '|'-separated fields" in str(err)
    raw = ml100k_folder(tmp_path, item=ML100K_ITEM, user=["1|24|M|technician|85711", "2|53|X|other|94043"])
    err = prepare_error(raw, tmp_path / "out", "movielens-100k")
    assert (Path(err.path).name, err.line, err.column) == ("u.user", 2, "gender")


def test_utf16_and_nul_bytes_are_refused(tmp_path):
    raw = ml1m_folder(tmp_path)
    (raw / "movies.dat").write_bytes(("\n".join(ML1M_MOVIES) + "\n").encode("utf-16"))
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert Path(err.path).name == "movies.dat" and "UTF-16" in str(err)
    (raw / "movies.dat").write_bytes(b"661::James\x00 (1996)::Drama\n")
    assert "NUL byte" in str(prepare_error(raw, tmp_path / "out", "movielens-1m"))
    write_lines(raw / "movies.dat", ML1M_MOVIES)
    (raw / "ratings.dat").write_bytes("\n".join(ML1M_RATINGS).encode("utf-16-le"))
    err = prepare_error(raw, tmp_path / "out", "movielens-1m")
    assert Path(err.path).name == "ratings.dat" and err.line == 1 and "NUL byte" in str(err)


def test_missing_folder_and_files(tmp_path):
    err = prepare_error(tmp_path / "nowhere", tmp_path / "out", "movielens-1m")
    assert "folder not found" in str(err) and "ml-1m/" in str(err) and "ratings.dat" in str(err)
    raw = ml100k_folder(tmp_path)
    (raw / "u.user").unlink()
    err = prepare_error(raw, tmp_path / "out", "movielens-100k")
    assert Path(err.path) == raw and "missing file(s) of movielens-100k: u.user" in str(err)
    assert "u.data, u.item and u.user" in str(err)


def test_empty_ratings_and_cli_exit_status(tmp_path, capsys):
    raw = ml1m_folder(tmp_path, ratings=[""])
    assert "no ratings" in str(prepare_error(raw, tmp_path / "out", "movielens-1m"))
    ml1m_folder(tmp_path, ratings=["1::661::3::978302109", "1:661:3:978302109"])
    code = cli_main(["data", "prepare", "--dataset", "movielens-1m", "--raw", str(raw), "--out", str(tmp_path / "out")])
    assert code == 1 and "ratings.dat:2: expected UserID::MovieID::Rating::Timestamp" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
