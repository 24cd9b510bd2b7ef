"""The one exception type for bad input data: it names the file, line and column, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DataError(Exception):
    """Raised when an input file is missing, malformed or holds impossible values.

    >>> str(DataError("raw/log.csv", "expected an integer, got 'abc'", line=17, column="video_id"))
    "raw/log.csv:17: column 'video_id': expected an integer, got 'abc'"
    """

    path: str | Path
    message: str
    line: int | None = None  # 1-based, the header being line 1
    column: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        what = self.message if self.column is None else f"column '{self.column}': {self.message}"
        return f"{where}: {what}"
