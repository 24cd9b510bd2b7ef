"""Plain-text metric tables that are also valid GitHub markdown.

One row per run / model / action, one column per metric; floats get a fixed number of decimals so that
columns line up and diffs between runs are easy to read. Columns appear in first-seen order unless
given; a metric a row lacks prints as ``-``.

>>> print(format_table({"sasrec": {"hr@10": 0.31416, "ndcg@10": 0.2}, "pop": {"hr@10": 0.05}}, index="model"))
| model  |  hr@10 | ndcg@10 |
| :----- | -----: | ------: |
| sasrec | 0.3142 |  0.2000 |
| pop    | 0.0500 |       - |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["format_cell", "format_table"]

MISSING = "-"


def format_cell(value: object, decimals: int = 4) -> str:
    """One cell: ints (and integer tensors) as is, other numbers (floats, 0-d tensors) with ``decimals``.

    >>> format_cell(0.5), format_cell(12), format_cell(float("nan")), format_cell(None), format_cell("x|y")
    ('0.5000', '12', 'nan', '-', 'x\\\\|y')
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value.replace("|", "\\|")  # a bare pipe would split the markdown cell
    if isinstance(value, torch.Tensor):
        value = value.item()  # also raises for tensors with more than one element: a bug upstream
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{decimals}f}"


def format_table(
    rows: Mapping[str, Mapping[str, object]],
    *,
    decimals: int = 4,
    columns: Sequence[str] | None = None,
    index: str = "",
) -> str:
    """Aligned markdown table of ``rows`` (``{row name: {column: value}}``); ``index`` heads the name column.

    Names are left-aligned and values right-aligned (so decimal points line up), both in the text and
    through the markdown alignment row.

    >>> print(format_table({"click": {"auc": 0.7}}, decimals=2))
    |       |  auc |
    | :---- | ---: |
    | click | 0.70 |
    """
    if columns is None:
        columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    header = [format_cell(index)] + [format_cell(c) for c in columns]
    body = [
        [format_cell(name)] + [format_cell(row.get(c), decimals) for c in columns] for name, row in rows.items()
    ]
    # At least 4 characters, so the alignment cells (':---' / '---:') are valid markdown.
    widths = [max(4, *(len(r[j]) for r in [header, *body])) for j in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = [":" + "-" * (widths[0] - 1)] + ["-" * (w - 1) + ":" for w in widths[1:]]
    return "\n".join([line(header), line(rule), *(line(r) for r in body)])
