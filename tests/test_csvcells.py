"""The one escaping rule of every CSV sitefusion writes (issue 31, class 7)."""

from __future__ import annotations

import csv
import io

import pytest

from sitefusion.csvcells import csv_text, escape_cell, unescape_cell

CELLS = ["=1+1", "+1", "-2", "@A1", "\tx", "\rx", "'=x", "''", "'", "'abc", "plain", "", "a=b"]


@pytest.mark.parametrize("text", CELLS)
def test_escaping_round_trips_and_never_starts_a_formula(text: str) -> None:
    cell = escape_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unescape_cell(cell) == text


def test_csv_text_escapes_text_but_not_numbers() -> None:
    text = csv_text(["=h", "n"], [["=cmd|' /C calc'!A0", -0.5], [None, 3]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["'=h", "n"], ["'=cmd|' /C calc'!A0", "-0.5"], ["", "3"]]
