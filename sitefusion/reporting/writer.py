"""Write a report folder: ``metrics.json``, ``report.md`` and ``report.html``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.atomic import write_text_atomic as atomic_write_text
from sitefusion.evaluation.predictions import PredictionSet
from sitefusion.evaluation.schema import validate_metrics
from sitefusion.reporting.html import render_html
from sitefusion.reporting.markdown import render_markdown

__all__ = ["MARKDOWN_FILE", "METRICS_FILE", "ReportPaths", "json_ready", "write_report"]

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "report.md"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` wrote its three files."""

    metrics_json: Path
    markdown: Path
    html: Path


def json_ready(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    ``nan``/``inf`` become ``None`` (JSON ``null``), numpy scalars and arrays become Python
    numbers and lists, tuples become lists, mapping keys become strings.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(
    metrics: Mapping[str, Any], preds: PredictionSet | None, out_dir: str | Path
) -> ReportPaths:
    """Validate ``metrics`` and write ``metrics.json``, ``report.md``, ``report.html``.

    ``metrics`` is the document of :func:`~sitefusion.evaluation.harness.evaluate_predictions`
    (``nan`` is written as ``null``); it must pass
    :func:`~sitefusion.evaluation.schema.validate_metrics`, else
    :class:`~sitefusion.evaluation.errors.MetricsSchemaError` is raised before anything is
    written. ``preds`` (optional) adds the figures that need per-image predictions. Each file is
    written atomically; ``out_dir`` is created.
    """
    doc = json_ready(metrics)
    validate_metrics(doc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path = render_html(doc, preds, out)
    md_path = atomic_write_text(out / MARKDOWN_FILE, render_markdown(doc))
    json_path = atomic_write_text(
        out / METRICS_FILE, json.dumps(doc, indent=2, allow_nan=False) + "\n"
    )
    return ReportPaths(metrics_json=json_path, markdown=md_path, html=html_path)
