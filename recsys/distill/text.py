"""Text of every item and user of a prepared dataset, from a template over its side features (MARC's input).

MARC (:mod:`recsys.distill.marc`) compresses a text encoder's representation of each item and user; this
module writes the texts. A **template** is a Python format string whose fields are **column names** of the
prepared item (or user) table (``recsys data prepare``'s ``items.parquet`` / ``users.parquet``)::

    "{title} ({year}). Genres: {genres}."                       # a MovieLens item
    "A {gender} user aged {age}, working as {occupation}."     # a MovieLens user

How a field renders depends on its column:

* **categorical** (an integer column with a vocabulary ``vocab/<column>.parquet``, e.g. ``category``,
  ``author``, ``title``): the **raw** value from the vocabulary; index 0 (missing or unknown) -> ``unknown``;
* **list** (e.g. ``tags``, ``genres``): the raw values joined with ``", "``; an empty list -> ``unknown``;
* **numeric** (any other column, e.g. ``year``, ``video_duration``): the number (integral values without a
  decimal point, others with up to 4 decimals); null or NaN -> ``unknown``; dates as ``yyyy-mm-dd``.

A format spec applies to the raw value (``{year:d}``, ``{price:.2f}``, ``{seller:>6}``); a field may not
carry a conversion (``!r``), an attribute or an index. A :class:`Template` may also map raw values to words
(``values``: column -> raw value as text -> display text, e.g. Tmall's gender ``"0"`` -> ``"female"``) and
add **derived** numeric columns as polars expressions over the prepared table (e.g. KuaiRand's
``duration_s``, ``video_duration`` (ms) in whole seconds). A field naming no column raises
:class:`TemplateError` with the template, the column and the available columns.

The output is a list of strings aligned with the entity's indices: ``texts[i]`` is the text of item (user)
index ``i``; ``texts[0]`` (padding) is ``""``.

Default templates (:data:`DEFAULT_TEMPLATES`) are chosen by the dataset name in the prepared manifest
(``tmall``; ``kuairand-*``; ``movielens-*``); pass ``template=`` to override: a string replaces the default's text and keeps its value
maps and derived columns (so ``{duration_s}`` works in a custom KuaiRand template), a :class:`Template`
replaces it whole.

Worked example: a Tmall item whose category, seller and brand have the raw ids 1604, 3278 and 4953, by the
default template, then a custom template that names a column the table lacks::

    >>> ds = PreparedDataset("out/tmall")                                          # doctest: +SKIP
    >>> item_texts(ds)[1]                                                           # doctest: +SKIP
    'A product of category 1604, sold by seller 3278, brand 4953.'
    >>> item_texts(ds, "{brand} / {category} / {colour}")                            # doctest: +SKIP
    TemplateError: template '{brand} / {category} / {colour}' (items of tmall): unknown column 'colour';
    available columns: item, item_id, category, seller, brand

Rendering one table directly (what :func:`item_texts` does after reading the prepared folder)::

    >>> items = pl.DataFrame({"item": [0, 1, 2], "genres": [[], [1, 2], [2]], "year": [None, 1995, None]})
    >>> vocab = {"genres": Vocab("genres", pl.Series(["Comedy", "Drama"]), pl.Series([5, 3]))}
    >>> render_table(items, "item", "{genres} ({year})", vocab.get)
    ['', 'Comedy, Drama (1995)', 'Drama (unknown)']
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.data.errors import DataError
from recsys.data.prepared import PreparedDataset
from recsys.data.vocab import Vocab

Entity = Literal["item", "user"]
UNKNOWN = "unknown"


class TemplateError(ValueError):
    """A template that does not fit the table: an unknown column, or a field this module cannot render."""


@dataclass(frozen=True, eq=False)
class Template:
    """A format string over column names, with optional value maps and derived columns.

    ``values[column][raw]`` replaces the raw value ``raw`` (written as text, e.g. ``"0"`` or ``"M"``) of a
    categorical or list column before formatting; values without an entry render as themselves.
    ``derived[name]`` is a polars expression over the prepared table (categorical columns hold indices there)
    that adds a numeric column ``name`` for the template to use.
    """

    text: str
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    derived: Mapping[str, pl.Expr] = field(default_factory=dict)

    def fields(self) -> list[tuple[str, str]]:
        """``(column, format_spec)`` of every field, in order (may repeat)."""
        return [(name, spec) for _, name, spec, _ in _parse(self) if name is not None]


# ---------------------------------------------------------------------------------------------------------
# Default templates
# ---------------------------------------------------------------------------------------------------------

_KUAIRAND_DEGREES = {
    "full_active": "fully active", "high_active": "highly active", "middle_active": "moderately active",
    "low_active": "rarely active", "single_low_active": "very rarely active", "2_14_day_new": "new (2-14 days)",
    "30day_retention": "30-day retained", "day_new": "brand-new", "UNKNOWN": UNKNOWN,
}
_TMALL_AGES = {"1": "under 18", "2": "18-24", "3": "25-29", "4": "30-34", "5": "35-39", "6": "40-49",
               "7": "50 or older", "8": "50 or older"}
_MOVIELENS_USERS = {"gender": {"M": "male", "F": "female"}, "age": {"Under 18": "under 18", "56+": "56 or older"}}

#: Default templates by dataset family (``tmall``, ``kuairand``, ``movielens``) or exact dataset name (an entry
#: such as ``"kuairand-27k"`` would win over its family): see :func:`default_template`.
DEFAULT_TEMPLATES: dict[str, dict[str, Template]] = {
    "tmall": {
        "item": Template("A product of category {category}, sold by seller {seller}, brand {brand}."),
        "user": Template("A shopper aged {age_range}, {gender}.",
                         values={"age_range": _TMALL_AGES, "gender": {"0": "female", "1": "male"}}),
    },
    "kuairand": {
        "item": Template(
            "A {video_type} video ({upload_type} upload) by author {author}, {duration_s} seconds long. Tags: {tags}.",
            values={"video_type": {"NORMAL": "normal", "AD": "advertisement", "UNKNOWN": UNKNOWN},
                    "upload_type": {"UNKNOWN": UNKNOWN}},
            derived={"duration_s": (pl.col("video_duration") / 1000).round(0).cast(pl.Int64)},
        ),
        "user": Template(
            "A {user_active_degree} user, registered {register_days_range} days ago, following "
            "{follow_user_num_range} users, with {fans_user_num_range} fans and {friend_user_num_range} friends.",
            values={"user_active_degree": _KUAIRAND_DEGREES},
        ),
    },
    "movielens": {  # the reader writes titles without the year, ages as ML-1M bucket labels, occupation names
        "item": Template("{title} ({year}). Genres: {genres}."),
        "user": Template("A {gender} user aged {age}, working as {occupation}.", values=_MOVIELENS_USERS),
    },
}


def dataset_family(dataset: str) -> str:
    """``tmall`` / ``kuairand`` / ``movielens`` for a prepared dataset's name (else the name itself)."""
    name = dataset.lower()
    for family in ("kuairand", "movielens"):
        if name.startswith(family):
            return family
    if name.startswith("ml-"):
        return "movielens"
    return name


def default_template(dataset: str, entity: Entity) -> Template:
    """The default template of ``entity`` for the dataset named ``dataset`` (see :data:`DEFAULT_TEMPLATES`)."""
    _check_entity(entity)
    for key in (dataset.lower(), dataset_family(dataset)):
        if key in DEFAULT_TEMPLATES:
            return DEFAULT_TEMPLATES[key][entity]
    raise TemplateError(
        f"no default {entity} template for dataset {dataset!r} (defaults exist for "
        f"{', '.join(sorted(DEFAULT_TEMPLATES))}): pass template=\"...{{column}}...\""
    )


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def item_texts(dataset: PreparedDataset | str | Path, template: str | Template | None = None) -> list[str]:
    """Text of every item index (``texts[0] == ""``), by ``template`` or the dataset's default."""
    return entity_texts(dataset, "item", template)


def user_texts(dataset: PreparedDataset | str | Path, template: str | Template | None = None) -> list[str]:
    """Text of every user index (``texts[0] == ""``), by ``template`` or the dataset's default."""
    return entity_texts(dataset, "user", template)


def entity_texts(dataset: PreparedDataset | str | Path, entity: Entity,
                 template: str | Template | None = None) -> list[str]:
    """Texts of ``entity`` (``"item"`` or ``"user"``) of a prepared dataset, aligned with its indices."""
    _check_entity(entity)
    ds = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    name = ds.manifest.dataset
    if template is None:
        tpl = default_template(name, entity)
    elif isinstance(template, str):  # the default's value maps and derived columns still apply
        try:
            base = default_template(name, entity)
        except TemplateError:
            base = Template("")
        tpl = Template(template, base.values, base.derived)
    else:
        tpl = template
    table = ds.items() if entity == "item" else ds.users()
    expected = ds.manifest.vocab_sizes[entity]
    if table.height != expected:
        raise DataError(ds.path / f"{entity}s.parquet", f"{table.height} rows, expected {expected} (one per {entity} "
                                                        "index including padding 0)")
    vocab_dir = ds.path / "vocab"

    def vocab(column: str) -> Vocab | None:
        return ds.vocab(column) if (vocab_dir / f"{column}.parquet").is_file() else None

    return render_table(table, entity, tpl, vocab, where=f"{entity}s of {name}")


def render_table(table: pl.DataFrame, entity: str, template: str | Template,
                 vocab: Callable[[str], Vocab | None], *, where: str = "") -> list[str]:
    """Render ``template`` for every row of a prepared side table (column ``entity`` holds its index).

    ``vocab(column)`` returns the vocabulary of a categorical or list column, or ``None`` for a numeric one.
    Row ``i`` of the output is index ``i``; index 0 (padding) is ``""``.
    """
    tpl = _as_template(template)
    parsed = _parse(tpl)
    if entity not in table.columns:
        raise TemplateError(f"the table has no index column {entity!r} (columns: {', '.join(table.columns)})")
    table = table.sort(entity)
    index = table[entity].to_numpy()
    if not np.array_equal(index, np.arange(table.height)):
        raise TemplateError(f"the {entity} column is not the indices 0..{table.height - 1}: not a prepared side table")
    used = {name for _, name, _, _ in parsed if name is not None}
    available = [*table.columns, *(n for n in tpl.derived if n not in table.columns)]
    for name, expr in tpl.derived.items():
        if name in used:
            try:
                table = table.with_columns(expr.alias(name))
            except pl.exceptions.PolarsError as e:
                raise TemplateError(f"template {tpl.text!r}: derived column {name!r} failed on this table: {e}") from None
    rendered: dict[tuple[str, str], pl.Series] = {}
    for _, name, spec, _ in parsed:
        if name is None or (name, spec) in rendered:
            continue
        if name not in table.columns:
            at = f" ({where})" if where else ""
            raise TemplateError(f"template {tpl.text!r}{at}: unknown column {name!r}; available columns: "
                                f"{', '.join(available)}")
        voc = None if name in tpl.derived else vocab(name)
        rendered[(name, spec)] = _render_column(table[name], voc, spec, tpl.values.get(name, {}), tpl.text)
    parts: list[pl.Expr] = []
    frame = {}
    for literal, name, spec, _ in parsed:
        if literal:
            parts.append(pl.lit(literal, pl.String))
        if name is not None:
            key = f"f{len(frame)}"
            frame[key] = rendered[(name, spec)]
            parts.append(pl.col(key))
    if not parts:
        texts = [""] * table.height
    elif not frame:
        texts = ["".join(literal for literal, *_ in parsed)] * table.height
    else:
        texts = pl.DataFrame(frame).select(pl.concat_str(parts).alias("text"))["text"].to_list()
    if texts:
        texts[0] = ""
    return texts


def _render_column(col: pl.Series, vocab: Vocab | None, spec: str, values: Mapping[str, str], text: str) -> pl.Series:
    """One field for every row, as strings."""
    if isinstance(col.dtype, pl.List):
        lut = _lut(vocab, spec, values, text)
        lengths = col.list.len().fill_null(0).to_numpy()
        flat = col.list.explode(keep_nulls=False, empty_as_null=False)
        if lut is not None:
            strings = _gather(lut, flat, col.name)
        else:
            strings = pl.Series([_value(v, spec, values, text) for v in flat.to_list()], dtype=pl.String)
        rows = np.repeat(np.arange(col.len()), lengths)
        joined = (pl.DataFrame({"row": rows, "s": strings}).group_by("row", maintain_order=True)
                  .agg(pl.col("s").str.join(", ")))
        full = pl.DataFrame({"row": np.arange(col.len())}).join(joined, on="row", how="left", maintain_order="left")
        return full["s"].fill_null(UNKNOWN)
    if vocab is not None and col.dtype.is_integer():
        return _gather(_lut(vocab, spec, values, text), col.fill_null(0), col.name)
    if not spec and not values and col.dtype.is_integer():
        return col.cast(pl.String).fill_null(UNKNOWN)
    return pl.Series([_value(v, spec, values, text) for v in col.to_list()], dtype=pl.String)


def _lut(vocab: Vocab | None, spec: str, values: Mapping[str, str], text: str) -> pl.Series | None:
    """Rendered raw value of every index of ``vocab`` (index 0: ``unknown``)."""
    if vocab is None:
        return None
    return pl.Series([UNKNOWN, *(_value(v, spec, values, text) for v in vocab.raw.to_list())], dtype=pl.String)


def _gather(lut: pl.Series, idx: pl.Series, column: str) -> pl.Series:
    if idx.len() and idx.max() >= lut.len():
        raise TemplateError(f"column {column!r} holds index {idx.max()} beyond its vocabulary ({lut.len()} entries)")
    return lut.gather(idx.cast(pl.Int64))


def _value(v: Any, spec: str, values: Mapping[str, str], text: str) -> str:
    """One raw value as text: mapped through ``values``, else formatted by ``spec``; missing -> unknown."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return UNKNOWN
    if values:
        mapped = values.get(_plain(v))
        if mapped is not None:
            return mapped
    if spec:
        try:
            return format(v, spec)
        except (ValueError, TypeError) as e:
            raise TemplateError(f"template {text!r}: format spec {spec!r} does not apply to {v!r}: {e}") from None
    return _plain(v)


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        if 1e-4 <= abs(v) < 1e15:
            return np.format_float_positional(v, precision=4, trim="-")
        return f"{v:.4g}"
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return str(v)


def _parse(tpl: Template) -> list[tuple[str, str | None, str, str | None]]:
    try:
        parsed = list(string.Formatter().parse(tpl.text))
    except ValueError as e:
        raise TemplateError(f"template {tpl.text!r} is not a valid format string: {e}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not name.replace("_", "a").isalnum():
            raise TemplateError(f"template {tpl.text!r}: field {{{name}}} must be a column name "
                                "(no positional fields, attributes or indices)")
        if conversion is not None:
            raise TemplateError(f"template {tpl.text!r}: field {{{name}!{conversion}}}: conversions are not supported")
        if "{" in (spec or ""):
            raise TemplateError(f"template {tpl.text!r}: field {{{name}}}: nested fields in a format spec are not "
                                "supported")
    return [(lit, name, spec or "", conv) for lit, name, spec, conv in parsed]


def _as_template(template: str | Template) -> Template:
    return template if isinstance(template, Template) else Template(str(template))


def _check_entity(entity: str) -> None:
    if entity not in ("item", "user"):
        raise ValueError(f"entity must be 'item' or 'user', got {entity!r}")
