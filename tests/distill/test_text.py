"""Texts of items and users from templates over prepared side features: raw values through the vocabularies,
missing values, lists, numbers, default templates per dataset, and unknown-column errors."""

from __future__ import annotations

import doctest
from pathlib import Path

import polars as pl
import pytest

import recsys.distill.text as text_module
from recsys.data.manifest import Manifest
from recsys.data.prepared import PreparedDataset
from recsys.data.vocab import Vocab
from recsys.distill.text import (
    DEFAULT_TEMPLATES,
    Template,
    TemplateError,
    dataset_family,
    default_template,
    item_texts,
    render_table,
    user_texts,
)


def test_doctests() -> None:
    assert doctest.testmod(text_module).failed == 0


def test_tmall_default_texts_use_raw_values(prepared_tmall: Path) -> None:
    ds = PreparedDataset(prepared_tmall)
    texts = item_texts(ds)
    items = ds.items()
    assert len(texts) == ds.num_items == items.height and texts[0] == ""
    cat, seller, brand = ds.vocab("category").raw, ds.vocab("seller").raw, ds.vocab("brand").raw
    for i in (1, 2, ds.num_items - 1):
        row = items.row(i, named=True)
        b = "unknown" if row["brand"] == 0 else str(brand[row["brand"] - 1])
        assert texts[i] == (f"A product of category {cat[row['category'] - 1]}, sold by seller "
                            f"{seller[row['seller'] - 1]}, brand {b}.")
    users = user_texts(prepared_tmall)  # a path works too
    assert len(users) == ds.num_users and users[0] == ""
    assert all(u.startswith("A shopper aged ") for u in users[1:])
    table = ds.users()
    ages = ds.vocab("age_range").raw
    for u in range(1, ds.num_users):
        idx = table["age_range"][u]
        if idx == 0:
            assert "aged unknown" in users[u]
        elif ages[idx - 1] == 1:
            assert "aged under 18" in users[u]
    assert any("female" in u for u in users) and any(u.endswith(", male.") for u in users)


def test_kuairand_default_texts(prepared_kuairand: Path) -> None:
    ds = PreparedDataset(prepared_kuairand)
    texts, items = item_texts(ds), ds.items()
    tags, authors = ds.vocab("tags").raw, ds.vocab("author").raw
    uploads = ds.vocab("upload_type").raw
    for i in (1, 5, ds.num_items - 1):
        row = items.row(i, named=True)
        t = texts[i]
        assert t.startswith("A ") and f"by author {authors[row['author'] - 1]}," in t
        raw_upload = uploads[row["upload_type"] - 1]
        assert f"({'unknown' if raw_upload == 'UNKNOWN' else raw_upload} upload)" in t
        dur = row["video_duration"]
        assert (f"{round(dur / 1000)} seconds long" if dur is not None else "unknown seconds long") in t
        expected_tags = ", ".join(str(tags[j - 1]) for j in row["tags"]) or "unknown"
        assert t.endswith(f"Tags: {expected_tags}.")
    users = user_texts(ds)
    assert len(users) == ds.num_users and users[0] == ""
    assert all(" user, registered " in u and " days ago, following " in u for u in users[1:])
    assert not any("{" in u or "None" in u for u in users + texts)


def test_custom_template_spec_and_unknown_column(prepared_kuairand: Path) -> None:
    texts = item_texts(prepared_kuairand, "{video_type}|{upload_date}|{video_duration:.1f}|{duration_s}|{{literal}}")
    items = PreparedDataset(prepared_kuairand).items()
    for i in range(1, len(texts)):
        kind, day, dur, secs, lit = texts[i].split("|")
        assert kind in ("normal", "advertisement", "unknown") and lit == "{literal}"
        assert day == str(items["upload_date"][i]) if items["upload_date"][i] is not None else day == "unknown"
        ms = items["video_duration"][i]
        assert (dur, secs) == ((f"{ms:.1f}", str(round(ms / 1000))) if ms is not None else ("unknown", "unknown"))
    with pytest.raises(TemplateError) as err:
        item_texts(prepared_kuairand, "A {video_type} video, {colour} colour")
    msg = str(err.value)
    assert "'A {video_type} video, {colour} colour'" in msg and "'colour'" in msg
    assert "available columns: item, item_id, author, video_type" in msg and msg.endswith("duration_s")
    with pytest.raises(TemplateError, match="unknown column 'gender'"):
        user_texts(prepared_kuairand, "{gender}")


@pytest.mark.parametrize("bad", ["{}", "{0}", "{title.upper}", "{title[0]}", "{title!r}", "{title:{w}}", "{title"])
def test_bad_fields_are_refused(bad: str) -> None:
    table = pl.DataFrame({"item": [0, 1], "title": [0, 1]})
    with pytest.raises(TemplateError):
        render_table(table, "item", bad, lambda c: None)


def _movie_vocabs() -> dict[str, Vocab]:
    def v(name: str, raw: list) -> Vocab:
        return Vocab(name, pl.Series(name, raw), pl.Series("count", [1] * len(raw), dtype=pl.UInt64))

    return {"title": v("title", ["Toy Story", "Heat"]), "genres": v("genres", ["Comedy", "Action", "Crime"]),
            "gender": v("gender", ["M", "F"]), "age": v("age", ["25-34", "Under 18"]),
            "occupation": v("occupation", ["programmer", "writer"])}


def test_render_table_missing_values_lists_numbers() -> None:
    items = pl.DataFrame({
        "item": pl.Series([0, 1, 2, 3], dtype=pl.UInt32),
        "title": pl.Series([0, 1, 2, 0], dtype=pl.UInt32),
        "year": pl.Series([None, 1995, None, 2001], dtype=pl.Int64),
        "genres": pl.Series([[], [1], [2, 3], []], dtype=pl.List(pl.UInt32)),
        "score": pl.Series([None, 3.5, float("nan"), 2.0], dtype=pl.Float32),
    })
    vocabs = _movie_vocabs()
    out = render_table(items, "item", "{title} ({year}). Genres: {genres}. Score {score}.", vocabs.get)
    assert out == ["", "Toy Story (1995). Genres: Comedy. Score 3.5.",
                   "Heat (unknown). Genres: Action, Crime. Score unknown.", "unknown (2001). Genres: unknown. Score 2."]
    # rows come out in index order whatever the table's order; value maps and derived columns
    shuffled = items[[2, 0, 3, 1]]
    tpl = Template("{title}/{decade}/{genres:>7}",
                   values={"genres": {"Crime": "crime story"}},
                   derived={"decade": (pl.col("year") // 10 * 10)})
    assert render_table(shuffled, "item", tpl, vocabs.get) == [
        "", "Toy Story/1990/ Comedy", "Heat/unknown/ Action, crime story", "unknown/2000/unknown"]
    with pytest.raises(TemplateError, match="beyond its vocabulary"):
        render_table(items.with_columns(pl.lit(9, pl.UInt32).alias("title")), "item", "{title}", vocabs.get)


def _fake_prepared(path: Path, dataset: str) -> Path:
    """A minimal prepared folder with a MovieLens-like item and user table (what the MovieLens reader writes)."""
    vocabs = _movie_vocabs()
    (path / "vocab").mkdir(parents=True)
    for v in vocabs.values():
        v.write(path / "vocab")
    Vocab("item", pl.Series("item", [10, 20]), pl.Series("count", [2, 1], dtype=pl.UInt64)).write(path / "vocab")
    Vocab("user", pl.Series("user", [7, 8]), pl.Series("count", [2, 1], dtype=pl.UInt64)).write(path / "vocab")
    pl.DataFrame({
        "item": pl.Series([0, 1, 2], dtype=pl.UInt32), "item_id": pl.Series([None, 10, 20], dtype=pl.UInt32),
        "title": pl.Series([0, 1, 2], dtype=pl.UInt32), "year": pl.Series([None, 1995, None], dtype=pl.Int32),
        "genres": pl.Series([[], [1], [2, 3]], dtype=pl.List(pl.UInt32)),
    }).write_parquet(path / "items.parquet")
    pl.DataFrame({
        "user": pl.Series([0, 1, 2], dtype=pl.UInt32), "user_id": pl.Series([None, 7, 8], dtype=pl.UInt32),
        "gender": pl.Series([0, 1, 2], dtype=pl.UInt32), "age": pl.Series([0, 1, 2], dtype=pl.UInt32),
        "occupation": pl.Series([0, 1, 0], dtype=pl.UInt32),
    }).write_parquet(path / "users.parquet")
    Manifest(dataset=dataset, config={}, inputs=[], raw_root="", actions=["like"], rows={},
             vocab_sizes={"item": 3, "user": 3}, split={}, days={}, columns={}, tie_rule="").write(path)
    return path


def test_movielens_defaults(tmp_path: Path) -> None:
    ml = _fake_prepared(tmp_path / "ml", "movielens-1m")
    assert item_texts(ml) == ["", "Toy Story (1995). Genres: Comedy.", "Heat (unknown). Genres: Action, Crime."]
    assert user_texts(ml) == ["", "A male user aged 25-34, working as programmer.",
                              "A female user aged under 18, working as unknown."]
    # a string keeps the default's value maps; a Template replaces the default whole
    assert user_texts(ml, "{user_id}: {gender}") == ["", "7: male", "8: female"]
    assert user_texts(ml, Template("{user_id}: {gender}")) == ["", "7: M", "8: F"]
    assert item_texts(ml, Template("{item}")) == ["", "10", "20"]  # the item column renders raw ids


def test_default_template_lookup() -> None:
    assert dataset_family("kuairand-27k") == "kuairand" and dataset_family("movielens-20m") == "movielens"
    assert dataset_family("ml-1m") == "movielens" and dataset_family("tmall") == "tmall"
    assert default_template("kuairand-1k", "item") is DEFAULT_TEMPLATES["kuairand"]["item"]
    assert default_template("movielens-100k", "user") is DEFAULT_TEMPLATES["movielens"]["user"]
    assert default_template("movielens-25m", "item") is DEFAULT_TEMPLATES["movielens"]["item"]
    with pytest.raises(TemplateError, match="no default item template for dataset 'amazon'"):
        default_template("amazon", "item")
    with pytest.raises(ValueError, match="entity"):
        default_template("tmall", "shop")  # type: ignore[arg-type]
    assert [n for n, _ in Template("{a} and {b:>3} and {a}").fields()] == ["a", "b", "a"]
