"""Reports of an evaluation: Markdown, a self-contained HTML file with figures, and metrics.json;
and the short console summaries of training stages (:mod:`~sitefusion.reporting.console`).

Reporting renders what :mod:`sitefusion.evaluation` computed; the curves behind its figures come
from :mod:`sitefusion.evaluation.curves`. matplotlib is imported only when figures are drawn.
"""

from sitefusion.reporting.console import (
    print_preparation,
    print_site_table,
    print_stage_timings,
)
from sitefusion.reporting.html import build_html, render_html
from sitefusion.reporting.markdown import render_markdown, render_markdown_table
from sitefusion.reporting.summary import summary_points, verdict
from sitefusion.reporting.writer import ReportPaths, json_ready, write_report

__all__ = [
    "ReportPaths",
    "build_html",
    "json_ready",
    "print_preparation",
    "print_site_table",
    "print_stage_timings",
    "render_html",
    "render_markdown",
    "render_markdown_table",
    "summary_points",
    "verdict",
    "write_report",
]
