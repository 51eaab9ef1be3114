"""How numbers, intervals and method names appear in reports (Markdown and HTML alike)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sitefusion.evaluation.method_families import METHOD_FAMILIES, family_of_method

__all__ = [
    "METHOD_DESCRIPTIONS",
    "METRIC_LABELS",
    "describe_method",
    "format_cell",
    "format_difference",
    "format_percent",
    "format_value",
]

#: Plain-language description of each method but the per-site ones, for the report's legend
#: (declared in :mod:`sitefusion.evaluation.method_families`).
METHOD_DESCRIPTIONS: dict[str, str] = {
    name: family.describe(name) for family in METHOD_FAMILIES for name in family.method_names
}

#: Human-readable metric names.
METRIC_LABELS: dict[str, str] = {
    "balanced_accuracy": "balanced accuracy",
    "macro_auc": "macro AUC (one-vs-rest)",
    "accuracy": "accuracy",
    "ece": "expected calibration error (lower is better)",
    "brier": "Brier score (lower is better)",
    "auc": "AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}

NA = "n/a"


def describe_method(name: str) -> str:
    """One-line description of method ``name`` (``local:<site>`` included)."""
    family = family_of_method(name)
    return family.describe(name) if family is not None else ""


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def format_value(x: Any, digits: int = 3) -> str:
    """``0.712``; ``n/a`` for ``None`` / ``nan``."""
    return f"{x:.{digits}f}" if _finite(x) else NA


def format_percent(x: Any) -> str:
    """``41.5%``; ``n/a`` for ``None``."""
    return f"{100 * x:.1f}%" if _finite(x) else NA


def format_cell(cell: Mapping[str, Any] | None) -> str:
    """``0.712 [0.65, 0.77]`` from ``{"value", "ci95"}``; ``n/a`` where undefined."""
    if not cell or not _finite(cell.get("value")):
        return NA
    low, high = (cell.get("ci95") or [None, None])[:2]
    if not (_finite(low) and _finite(high)):
        return format_value(cell["value"])
    return f"{cell['value']:.3f} [{low:.2f}, {high:.2f}]"


def format_difference(cell: Mapping[str, Any] | None) -> str:
    """``+0.022 [-0.01, +0.05]`` (signed) from ``{"value", "ci95"}``; ``n/a`` where undefined."""
    if not cell or not _finite(cell.get("value")):
        return NA
    low, high = (cell.get("ci95") or [None, None])[:2]
    if not (_finite(low) and _finite(high)):
        return f"{cell['value']:+.3f}"
    return f"{cell['value']:+.3f} [{low:+.2f}, {high:+.2f}]"
