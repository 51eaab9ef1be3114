"""The one rule for text cells of every CSV sitefusion writes: a spreadsheet shows them, never
evaluates them (OWASP's CSV-injection rule).

A text cell that starts like a formula (``=``, ``+``, ``-``, ``@``, tab, carriage return) gets a
leading apostrophe, which spreadsheets hide and treat as "this is text". So that the files the
program reads back (``splits.csv``, per-site manifests) give the exact values again, a text cell
that starts with an apostrophe followed by one of those characters or by another apostrophe is
escaped too; :func:`unescape_cell` undoes exactly :func:`escape_cell`. Numbers are not text: a
negative score stays ``-0.5``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

__all__ = ["FORMULA_START", "csv_text", "escape_cell", "unescape_cell"]

FORMULA_START: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell."""

_MARK = "'"


def escape_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text (see the module docstring)."""
    if text.startswith(FORMULA_START) or (
        text.startswith(_MARK) and text[1:].startswith((*FORMULA_START, _MARK))
    ):
        return _MARK + text
    return text


def unescape_cell(text: str) -> str:
    """The value :func:`escape_cell` was given, from the cell it returned."""
    if text.startswith(_MARK) and text[1:].startswith((*FORMULA_START, _MARK)):
        return text[1:]
    return text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text (``\\n`` line ends) of a header and rows: text cells through
    :func:`escape_cell`, ``None`` empty, other values as ``str``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([escape_cell(h) for h in header])
    for row in rows:
        writer.writerow(
            ["" if v is None else escape_cell(v) if isinstance(v, str) else str(v) for v in row]
        )
    return buf.getvalue()
