"""Reports of an evaluation: Markdown, a self-contained HTML file with figures, and metrics.json.

Reporting renders what :mod:`sitefusion.evaluation` computed; the curves behind its figures come
from :mod:`sitefusion.evaluation.curves`. matplotlib is imported only when figures are drawn.
"""

from sitefusion.reporting.html import build_html, render_html
from sitefusion.reporting.markdown import render_markdown, render_markdown_table
from sitefusion.reporting.summary import summary_points, verdict
from sitefusion.reporting.writer import ReportPaths, json_ready, write_report

__all__ = [
    "ReportPaths",
    "build_html",
    "json_ready",
    "render_html",
    "render_markdown",
    "render_markdown_table",
    "summary_points",
    "verdict",
    "write_report",
]
