"""format_table: exact text, alignment, markdown validity."""

from __future__ import annotations

import torch

from recsys.metrics import format_cell, format_table


def test_exact_layout() -> None:
    rows = {
        "sasrec": {"hr@10": 0.123456, "ndcg@10": 0.05},
        "popularity": {"hr@10": 0.01, "mrr": torch.tensor(0.25)},
    }
    expected = (
        "| model      |  hr@10 | ndcg@10 |    mrr |\n"
        "| :--------- | -----: | ------: | -----: |\n"
        "| sasrec     | 0.1235 |  0.0500 |      - |\n"
        "| popularity | 0.0100 |       - | 0.2500 |"
    )
    assert format_table(rows, index="model") == expected


def test_decimals_columns_and_alignment() -> None:
    rows = {"a": {"x": 1.0, "y": 12345.678}, "b": {"x": float("nan"), "y": 2}}
    text = format_table(rows, decimals=2, columns=["y", "x"])
    lines = text.splitlines()
    assert lines[0] == "|      |        y |    x |"
    assert lines[2:] == ["| a    | 12345.68 | 1.00 |", "| b    |        2 |  nan |"]
    assert len({len(line) for line in lines}) == 1  # every line equally long: aligned
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    # Markdown: the rule row has one ':---'/'---:' cell per column, each at least 3 dashes.
    cells = lines[1].strip("| ").split(" | ")
    assert len(cells) == 3 and cells[0].startswith(":") and all(c.endswith(":") for c in cells[1:])
    assert all(c.count("-") >= 3 for c in cells)


def test_cells() -> None:
    assert format_cell(1 / 3) == "0.3333"
    assert format_cell(1 / 3, decimals=1) == "0.3"
    assert format_cell(True) == "1.0000"  # a bool is a number, not a count
    assert format_cell(torch.tensor(7)) == "7"
    assert format_cell(torch.tensor(0.5, dtype=torch.bfloat16)) == "0.5000"
    assert format_cell("a|b") == "a\\|b"  # escaped, so the markdown row keeps its columns
    assert format_table({"x|y": {"m": 1.0}}).splitlines()[2] == "| x\\|y | 1.0000 |"
