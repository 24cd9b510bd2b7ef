"""Checked CSV scanning: exact headers, and errors that point at the offending line and column.

The fast path is a polars lazy scan with an explicit schema. Polars reports a malformed row only
approximately (a byte offset of a parse chunk), so when a scan fails, or a validity check finds an
impossible value, a second, slow pass over the file finds the first offending line and column and raises
a :class:`~recsys.data.errors.DataError` naming them. The slow pass runs only on the error path.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.data.errors import DataError
from recsys.data.schemas import Schema, csv_header

_INT = re.compile(r"-?\d+")
_HEAD_BYTES = 1 << 16


def read_header(path: Path) -> list[str]:
    """Column names of the first line of ``path`` (a UTF-8 BOM and a CR before the LF are tolerated)."""
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    if not head:
        raise DataError(path, "file is empty: expected a header line")
    first = head.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
    try:
        return next(csv.reader([first.decode("utf-8")]))
    except (UnicodeDecodeError, StopIteration) as e:
        raise DataError(path, f"unreadable header line: {e}", line=1) from None


def check_header(path: Path, schema: Schema, *, require_rows: bool = True) -> None:
    """Raise a :class:`DataError` unless ``path`` starts with exactly the schema's header.

    Missing, extra, renamed and reordered columns are each named in the message.
    """
    got = read_header(path)
    expected = list(schema)
    if got == expected:
        if require_rows and not _has_data_row(path):
            raise DataError(path, f"no data rows after the header (expected rows of {csv_header(schema)})")
        return
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    if len(got) == len(expected) and len(missing) == len(extra) and missing:
        pairs = [f"'{g}' where '{e}' was expected" for e, g in zip(expected, got, strict=True) if e != g]
        msg = "renamed column(s): " + "; ".join(pairs)
    elif missing or extra:
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(f"'{c}'" for c in missing))
        if extra:
            parts.append("unexpected column(s) " + ", ".join(f"'{c}'" for c in extra))
        msg = "; ".join(parts)
    else:
        pos = next(i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g)
        msg = f"columns in the wrong order: column {pos + 1} is '{got[pos]}' where '{expected[pos]}' was expected"
    raise DataError(path, f"{msg}; expected the header {csv_header(schema)}", line=1)


def _has_data_row(path: Path) -> bool:
    with path.open("rb") as f:
        f.readline()
        while line := f.readline():
            if line.strip():
                return True
    return False


def scan(paths: Path | Sequence[Path], schema: Schema, *, null_values: Sequence[str] = ()) -> pl.LazyFrame:
    """A lazy scan of one or more CSV files with exactly ``schema`` (headers checked separately)."""
    sources = [str(p) for p in ([paths] if isinstance(paths, Path) else paths)]
    return pl.scan_csv(
        sources,
        schema=schema,
        null_values=list(null_values) or None,
        raise_if_empty=True,
        glob=False,
    )


def locate_parse_error(path: Path, schema: Schema, *, null_values: Sequence[str] = ()) -> DataError | None:
    """The first row of ``path`` whose field count or number formats do not fit ``schema`` (slow pass)."""
    names = list(schema)
    kinds = [_kind(dtype) for dtype in schema.values()]
    nulls = {"", *null_values}
    with path.open(newline="", encoding="utf-8", errors="strict") as f:
        reader = csv.reader(f)
        try:
            next(reader)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(names):
                    return DataError(path, f"expected {len(names)} fields, got {len(row)}", line=line)
                for name, (kind, lo, hi), value in zip(names, kinds, row, strict=True):
                    if value in nulls or kind == "str":
                        continue
                    if kind == "int" and not _INT.fullmatch(value):
                        return DataError(path, f"expected an integer, got {value!r}", line=line, column=name)
                    if kind == "int" and not lo <= int(value) <= hi:
                        return DataError(path, f"expected an integer in {lo}..{hi}, got {value!r}", line=line, column=name)
                    if kind == "float" and not _is_float(value):
                        return DataError(path, f"expected a number, got {value!r}", line=line, column=name)
        except UnicodeDecodeError as e:
            return DataError(path, f"not valid UTF-8 ({e.reason})")
        except csv.Error as e:
            return DataError(path, f"malformed CSV: {e}", line=reader.line_num)
    return None


def _kind(dtype: pl.DataType) -> tuple[str, int, int]:
    """``(kind, lo, hi)``: integers carry the range of their dtype (narrow dtypes reject overflow)."""
    if dtype.is_integer():
        bits = int(str(dtype).lstrip("UuIint") or 64)
        if dtype.is_unsigned_integer():
            return "int", 0, (1 << bits) - 1
        return "int", -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if dtype.is_float():
        return "float", 0, 0
    return "str", 0, 0


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Check:
    """A value rule: rows where ``invalid`` is true break it; ``expected`` says what a valid value is."""

    column: str
    invalid: pl.Expr
    expected: str


def locate_invalid(
    paths: Sequence[Path], schema: Schema, check: Check, *, null_values: Sequence[str] = ()
) -> DataError | None:
    """The first line, across ``paths`` in order, that breaks ``check`` (slow pass, error path only)."""
    for path in paths:
        hit = (
            scan(path, schema, null_values=null_values)
            .with_row_index("_row")
            .filter(check.invalid)
            .select("_row", check.column)
            .head(1)
            .collect()
        )
        if hit.height:
            row, value = hit.row(0)
            got = "a missing value" if value is None else repr(value)
            return DataError(path, f"expected {check.expected}, got {got}", line=row + 2, column=check.column)
    return None


def diagnose(
    exc: Exception, paths: Sequence[Path], schema: Schema, *, null_values: Sequence[str] = ()
) -> DataError:
    """Turn a polars failure while reading ``paths`` into a :class:`DataError` naming the line."""
    for path in paths:
        found = locate_parse_error(path, schema, null_values=null_values)
        if found is not None:
            return found
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = paths[0] if len(paths) == 1 else ", ".join(p.name for p in paths)
    return DataError(where, f"could not be read: {first}")


def validate(
    frame: pl.DataFrame | pl.LazyFrame,
    checks: Sequence[Check],
    paths: Sequence[Path],
    schema: Schema,
    *,
    null_values: Sequence[str] = (),
) -> None:
    """Raise the first broken ``check`` as a :class:`DataError` with its file and line.

    ``frame`` holds the raw columns the checks refer to; counting violations is one cheap pass, and only
    when one is found are the files scanned again to locate it.
    """
    if not checks:
        return
    counts = frame.select([c.invalid.sum().alias(str(i)) for i, c in enumerate(checks)])
    if isinstance(counts, pl.LazyFrame):
        counts = counts.collect(engine="streaming")
    for i, check in enumerate(checks):
        if counts[str(i)][0]:
            error = locate_invalid(paths, schema, check, null_values=null_values)
            # A short row parses with missing trailing fields: report the malformed row itself when it
            # comes first, rather than the missing value it causes.
            structural = _first_structural_error(paths, schema, null_values, until=error)
            raise structural or error or DataError(paths[0], f"expected {check.expected}", column=check.column)


def _first_structural_error(
    paths: Sequence[Path], schema: Schema, null_values: Sequence[str], until: DataError | None
) -> DataError | None:
    for path in paths:
        found = locate_parse_error(path, schema, null_values=null_values)
        if found is not None:
            if until is None or Path(until.path) != path or (found.line or 0) <= (until.line or 0):
                return found
            return None
        if until is not None and Path(until.path) == path:
            return None
    return None


def read_checked(
    paths: Sequence[Path], schema: Schema, checks: Sequence[Check] = (), *, null_values: Sequence[str] = ()
) -> pl.DataFrame:
    """Read whole (small) files with exactly ``schema``, raising a located DataError on bad rows or values."""
    try:
        frame = scan(paths, schema, null_values=null_values).collect()
    except pl.exceptions.PolarsError as e:
        raise diagnose(e, paths, schema, null_values=null_values) from None
    validate(frame, checks, paths, schema, null_values=null_values)
    return frame
