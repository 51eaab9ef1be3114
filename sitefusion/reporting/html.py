"""Render the metrics document (and, optionally, the predictions) as one self-contained HTML file.

Figures are PNGs embedded as ``data:`` URLs, styles are inline: the file opens offline, can be
e-mailed or archived alone, and references nothing outside itself. Figures that need the
per-image predictions (ROC curves, confusion matrices, reliability diagrams) are drawn only when
``preds`` is given; their curves come from :mod:`sitefusion.evaluation.curves`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.atomic import write_text_atomic as atomic_write_text
from sitefusion.evaluation.calibration import apply_temperature
from sitefusion.evaluation.errors import EvaluationError
from sitefusion.evaluation.method_families import POOLED
from sitefusion.evaluation.predictions import PredictionSet
from sitefusion.reporting import figures as f
from sitefusion.reporting import tables as t
from sitefusion.reporting.summary import summary_points

__all__ = ["build_html", "render_html", "table_to_html"]

REPORT_FILE = "report.html"

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; margin: 0 auto; max-width: 1500px; padding: 16px 24px 48px; color: #1b1b1b;
       line-height: 1.45; background: #ffffff; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 2px solid #dde3ea;
     padding-bottom: 4px; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
.meta { color: #555; margin-top: 0; }
.summary { background: #f3f7fb; border-left: 4px solid #2f6ea5; padding: 10px 18px 10px 10px;
           border-radius: 4px; }
.summary li { margin: 0.35rem 0; }
.figrow { display: grid; grid-template-columns: minmax(0, max-content) max-content; gap: 20px;
          align-items: start; }
.figrow figure { margin: 0; min-width: 0; display: table; }
.figrow figcaption { display: table-caption; caption-side: bottom; }
.figrow figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
.figrow aside h3 { margin-top: 0; }
@media (max-width: 1100px) { .figrow { grid-template-columns: minmax(0, 1fr); } }
figcaption { color: #444; font-size: 0.85rem; margin-top: 4px; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 6px 0;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d7dde4; padding: 3px 8px; text-align: right; white-space: nowrap; }
thead th { background: #eef2f6; text-align: center; }
tbody th { text-align: left; background: #fafbfc; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.diag { outline: 2px solid #c0392b; outline-offset: -2px; }
td.text { text-align: left; white-space: normal; }
.tablewrap { overflow-x: auto; }
.note { color: #555; font-size: 0.8rem; margin: 2px 0 10px; max-width: 75em; }
.absent { color: #777; font-style: italic; }
"""


def table_to_html(table: t.Table, heading: str = "h3") -> str:
    """A :class:`~sitefusion.reporting.tables.Table` as an HTML heading, table and note."""
    e = html.escape
    diagonal = set(table.diagonal)
    head = "".join(f"<th scope='col'>{e(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, cell in enumerate(row):
            if j == 0 and table.first_column_is_header:
                cells.append(f"<th scope='row'>{e(cell)}</th>")
            else:
                classes = [
                    c for c, on in (("diag", (i, j) in diagonal), ("text", not table.numeric)) if on
                ]
                cls = f" class='{' '.join(classes)}'" if classes else ""
                cells.append(f"<td{cls}>{e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"<p class='note'>{e(table.note)}</p>" if table.note else ""
    return (
        f"<{heading}>{e(table.title)}</{heading}><div class='tablewrap'><table>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{note}"
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}'>"


def _figure_row(png: bytes | None, alt: str, caption: str, side: str) -> str:
    if png is None:
        return ""
    return (
        f"<div class='figrow'><figure>{_img(png, alt)}<figcaption>{html.escape(caption)}"
        f"</figcaption></figure><aside>{side}</aside></div>"
    )


def _check_preds(metrics: Mapping[str, Any], preds: PredictionSet) -> None:
    if list(preds.sites) != list(metrics["sites"]) or list(preds.classes) != list(
        metrics["classes"]
    ):
        raise EvaluationError(
            f"predictions and metrics disagree: sites {list(preds.sites)} vs "
            f"{list(metrics['sites'])}, classes {list(preds.classes)} vs "
            f"{list(metrics['classes'])}; pass the PredictionSet the metrics were computed from"
        )


def _panels(preds: PredictionSet, series: Mapping[str, np.ndarray]) -> list[Any]:
    panels = []
    for s in preds.sites:
        mask = preds.site == s
        panels.append(
            (
                f"{s} (n={int(mask.sum())})",
                preds.labels[mask],
                {k: v[mask] for k, v in series.items()},
            )
        )
    panels.append((f"all images (n={preds.n_images})", preds.labels, dict(series)))
    return panels


def _prediction_figures(metrics: Mapping[str, Any], preds: PredictionSet, side: str) -> str:
    ref = str(metrics.get("settings", {}).get("reference", "fusion"))
    shown = [m for m in (ref, POOLED.name) if m in preds.probs] or [next(iter(preds.probs))]
    colours = f.method_colours(list(metrics["methods"]))
    series = {m: np.asarray(preds.probs[m]) for m in shown}
    parts = ["<h2>ROC curves per site</h2>"]
    roc_kind = "binary ROC" if preds.n_classes == 2 else "macro-average one-vs-rest ROC"
    parts.append(
        _figure_row(
            f.roc_figure(_panels(preds, series), colours),
            f"ROC curves of {', '.join(shown)} per site",
            f"{roc_kind[:1].upper()}{roc_kind[1:]} of {' and '.join(shown)} on each site's test "
            "images; the legend gives "
            "the AUC. The dotted diagonal is chance.",
            side,
        )
    )
    parts.append("<h2>Confusion matrices</h2>")
    rows = [(m, _panels(preds, {m: series[m]})) for m in shown]
    parts.append(
        _figure_row(
            f.confusion_figure(rows, preds.classes),
            f"Confusion matrices of {', '.join(shown)} per site",
            "Counts of images by true class (rows) and predicted class (columns); shading is "
            "the share of the true class (row), so the diagonal reads as sensitivity.",
            side,
        )
    )
    cal = metrics.get("calibration") or {}
    bins = int(metrics.get("settings", {}).get("ece_bins", 15))
    if cal.get("method") in preds.probs and cal.get("temperature"):
        name, temp = str(cal["method"]), float(cal["temperature"])
        scaled = apply_temperature(np.log(np.clip(preds.probs[name], 1e-12, 1.0)), temp)
        after = f"{name} after T={temp:.2f}"
        rel_series = {name: np.asarray(preds.probs[name]), after: scaled}
        rel_colours = {name: colours.get(name), after: "#d62728"}
        what = f"{name} before and after temperature scaling"
    else:
        rel_series, rel_colours, what = series, colours, " and ".join(shown)
    parts.append("<h2>Calibration</h2>")
    parts.append(
        _figure_row(
            f.reliability_figure(_panels(preds, rel_series), rel_colours, bins),
            f"Reliability diagrams of {what}",
            f"Reliability of {what}: accuracy against mean confidence in {bins} equal-width "
            "confidence bins. Points below the diagonal are over-confident.",
            side,
        )
    )
    return "".join(parts)


def _heatmaps(metrics: Mapping[str, Any], side: str) -> str:
    parts = []
    matrix = metrics.get("local_cross_site") or {}
    if matrix:
        sites = list(metrics["sites"])
        experts = list(matrix)
        values = np.array(
            [
                [
                    v
                    if isinstance(v := (matrix[e].get(s) or {}).get("value"), float | int)
                    else np.nan
                    for s in sites
                ]
                for e in experts
            ],
            dtype=np.float64,
        )
        diag = [(i, sites.index(e)) for i, e in enumerate(experts) if e in sites]
        parts.append("<h2>Local experts across sites</h2>")
        parts.append(
            _figure_row(
                f.heatmap_figure(
                    [("balanced accuracy", values)],
                    [f"expert {e}" for e in experts],
                    sites,
                    "test site",
                    "trained on",
                    highlight=diag,
                ),
                "Balanced accuracy of each local expert on each test site",
                "Rows: the expert trained on one site; columns: the site it is tested on. "
                "Outlined: the expert's own site.",
                side,
            )
        )
        table = t.cross_site_table(metrics)
        if table is not None:
            parts.append(table_to_html(table))
    attention = metrics.get("attention") or {}
    panels: list[tuple[str, np.ndarray]] = []
    for method, by_site in attention.items():
        sites = list(by_site)
        experts = list(next(iter(by_site.values()))) if by_site else []
        if experts:
            values = np.array(
                [
                    [np.nan if by_site[s][x] is None else by_site[s][x] for x in experts]
                    for s in sites
                ],
                dtype=np.float64,
            )
            panels.append((method, values))
    if panels:
        stacked = np.concatenate([v.ravel() for _, v in panels])
        vmax = float(np.nanmax(stacked)) if np.isfinite(stacked).any() else 1.0
        parts.append("<h2>Which expert the fusion relied on</h2>")
        parts.append(
            _figure_row(
                f.heatmap_figure(
                    panels,
                    sites,
                    [f"expert {x}" for x in experts],
                    "expert",
                    "test site",
                    vmax=max(vmax, 1e-9),
                ),
                "Mean fusion weight of each expert on each site's images",
                "Mean weight each fusion head gave each expert (columns) on the test images of "
                "each site (rows); one panel per fusion method.",
                side,
            )
        )
    return "".join(parts)


def build_html(metrics: Mapping[str, Any], preds: PredictionSet | None = None) -> str:
    """Return the HTML report as a string (see :func:`render_html`)."""
    if preds is not None:
        _check_preds(metrics, preds)
    e = html.escape
    prevalence = t.prevalence_table(metrics)
    side = table_to_html(prevalence, "h3") if prevalence is not None else ""
    n_classes = len(metrics["classes"])
    settings = metrics.get("settings", {})
    first = next(iter(metrics["methods"].values()))
    run = metrics.get("run") or {}
    meta = (
        f"Sites: {e(', '.join(metrics['sites']))} · classes: {e(', '.join(metrics['classes']))}"
        f" · {first['overall']['n']} test images · 95% intervals from "
        f"{settings.get('n_boot', '?')} patient/lesion (group) resamples per site"
    )
    if run.get("run_id"):
        meta += f" · run {e(str(run['run_id']))}"
    if run.get("test_set"):
        meta += f" · test set: {e(str(run['test_set']))}"
    body = [
        "<h1>Cross-site evaluation report</h1>",
        f"<p class='meta'>{meta}</p>",
        "<h2>Summary</h2><ul class='summary'>",
        *(f"<li>{e(p)}</li>" for p in summary_points(metrics)),
        "</ul>",
        "<h2>Balanced accuracy per site</h2>",
        _figure_row(
            f.metric_bars_figure(metrics, "balanced_accuracy", chance=1.0 / n_classes),
            "Balanced accuracy per site and method with 95% intervals",
            "Balanced accuracy (mean sensitivity over classes) of every method on each site, with "
            "95% group-bootstrap intervals. Dashed: chance level.",
            side,
        ),
    ]
    for table in (
        t.metric_table(metrics, "balanced_accuracy"),
        t.paired_table(metrics, "balanced_accuracy"),
    ):
        if table is not None:
            body.append(table_to_html(table))
    body.append("<h2>Macro AUC per site</h2>")
    body.append(
        _figure_row(
            f.metric_bars_figure(metrics, "macro_auc", chance=0.5),
            "Macro AUC per site and method with 95% intervals",
            "Macro one-vs-rest AUC of every method on each site with 95% intervals. Dashed: "
            "chance (0.5).",
            side,
        )
    )
    names = list(first["overall"])
    for table in (
        t.metric_table(metrics, "macro_auc"),
        *(t.metric_table(metrics, k) for k in ("sensitivity", "specificity") if k in names),
        t.per_class_table(metrics),
    ):
        if table is not None:
            body.append(table_to_html(table))
    if preds is not None:
        body.append(_prediction_figures(metrics, preds, side))
    else:
        body.append(
            "<h2>Calibration</h2><p class='absent'>ROC curves, confusion matrices and "
            "reliability diagrams need the per-image predictions, which were not supplied.</p>"
        )
    for table in (
        t.metric_table(metrics, "ece"),
        t.metric_table(metrics, "brier"),
        t.calibration_table(metrics),
    ):
        if table is not None:
            body.append(table_to_html(table))
    body.append(_heatmaps(metrics, side))
    loso = t.loso_table(metrics)
    if loso is not None:
        body.append("<h2>Leave-one-site-out</h2>" + table_to_html(loso))
    body.append("<h2>About this report</h2>")
    body.append(table_to_html(t.method_legend(metrics)))
    body.append(table_to_html(t.settings_table(metrics)))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Cross-site evaluation report</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def render_html(
    metrics: Mapping[str, Any], preds: PredictionSet | None, out_dir: str | Path
) -> Path:
    """Write the self-contained ``report.html`` into ``out_dir`` (created) and return its path.

    Contents: a plain-language summary; per-site bar charts of balanced accuracy and macro AUC
    with 95% intervals for every method, each next to the class-prevalence table; the metric and
    paired-difference tables; with ``preds``, per-site ROC curves, confusion matrices and
    reliability diagrams of the reference and pooled methods (before/after temperature scaling
    when the document's ``calibration`` holds a temperature); heatmaps of the local experts'
    cross-site balanced accuracy and of the mean fusion weight per expert and site;
    leave-one-site-out; a legend of the methods and the bootstrap settings.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / REPORT_FILE, build_html(metrics, preds))
