"""Render the metrics document as Markdown (``report.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sitefusion.reporting import tables as t
from sitefusion.reporting.summary import summary_points

__all__ = ["render_markdown", "render_markdown_table", "report_tables", "table_to_markdown"]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_to_markdown(table: t.Table, level: int = 2) -> str:
    """A :class:`~sitefusion.reporting.tables.Table` as a heading, a pipe table and its note."""
    lines = [f"{'#' * level} {table.title}", ""]
    lines.append("| " + " | ".join(_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_escape(c) for c in row) + " |")
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines) + "\n"


def report_tables(metrics: Mapping[str, Any]) -> list[t.Table]:
    """Every table of the report, in order (empty ones left out)."""
    names = list(next(iter(metrics["methods"].values()))["overall"]) if metrics["methods"] else []
    candidates: list[t.Table | None] = [
        t.prevalence_table(metrics),
        t.metric_table(metrics, "balanced_accuracy"),
        t.paired_table(metrics, "balanced_accuracy"),
        t.metric_table(metrics, "macro_auc"),
        *(t.metric_table(metrics, k) for k in ("sensitivity", "specificity") if k in names),
        t.per_class_table(metrics),
        t.metric_table(metrics, "ece"),
        t.metric_table(metrics, "brier"),
        t.calibration_table(metrics),
        t.cross_site_table(metrics),
        *(t.attention_table(metrics, m) for m in metrics.get("attention") or {}),
        t.loso_table(metrics),
        t.method_legend(metrics),
        t.settings_table(metrics),
    ]
    return [c for c in candidates if c is not None]


def render_markdown(metrics: Mapping[str, Any]) -> str:
    """Return the Markdown report of a metrics document.

    A plain-language summary, then per-site tables (rows = methods, columns = sites, cells
    ``0.712 [0.65, 0.77]``): balanced accuracy, the reference's paired differences, macro AUC,
    calibration, class prevalence, the local experts' cross-site matrix, fusion weights,
    leave-one-site-out, a legend of the methods and the bootstrap settings.
    """
    sites = ", ".join(metrics["sites"])
    parts = [
        "# Cross-site evaluation report",
        "",
        f"Sites: {sites}. Classes: {', '.join(metrics['classes'])}.",
        "",
        "## Summary",
        "",
        *(f"- {_escape(p)}" for p in summary_points(metrics)),
        "",
    ]
    parts += [table_to_markdown(table) for table in report_tables(metrics)]
    return "\n".join(parts)


def render_markdown_table(metrics: Mapping[str, Any], metric: str = "balanced_accuracy") -> str:
    """The per-site table of one metric (rows = methods, columns = sites), with the summary.

    What the CLI and the demo print after an evaluation.
    """
    table = t.metric_table(metrics, metric)
    points = "\n".join(f"- {p}" for p in summary_points(metrics))
    return (table_to_markdown(table, level=3) if table is not None else "") + "\n" + points + "\n"
