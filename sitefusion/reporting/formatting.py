"""How numbers, intervals and method names appear in reports (Markdown and HTML alike)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "METHOD_DESCRIPTIONS",
    "METRIC_LABELS",
    "describe_method",
    "format_cell",
    "format_difference",
    "format_percent",
    "format_value",
]

#: Plain-language description of each method, for the report's legend.
METHOD_DESCRIPTIONS: dict[str, str] = {
    "fusion": "the product: the site experts combined by the trained fusion head",
    "fusion_concat": "fusion head variant that concatenates the experts' features",
    "fusion_attention": "fusion head variant that attends over the experts",
    "pooled": "one model trained on the images of all sites pooled together",
    "fedavg": (
        "one model trained by federated averaging over rounds (FedAvg), each site on its own images"
    ),
    "output_average": "average of the local experts' predicted probabilities",
    "weight_average": "one model whose weights are the average of the local experts' weights",
    "stacking": "a classifier trained on the local experts' outputs",
    "random_features": (
        "control: the fusion head on untrained (random) experts; fusion minus this is what the "
        "trained experts contribute"
    ),
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
    if name.startswith("local:"):
        return f"the expert trained on site {name.split(':', 1)[1]} alone"
    return METHOD_DESCRIPTIONS.get(name, "")


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
