"""The report's tables, built from the metrics document only, for Markdown and HTML alike.

Each builder returns a :class:`Table` (title, header, rows of strings, a note) or ``None`` when
the document lacks what the table shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sitefusion.reporting.formatting import (
    METRIC_LABELS,
    NA,
    describe_method,
    format_cell,
    format_difference,
    format_percent,
    format_value,
)

__all__ = [
    "Table",
    "attention_table",
    "calibration_table",
    "cross_site_table",
    "loso_table",
    "method_legend",
    "metric_table",
    "paired_table",
    "per_class_table",
    "prevalence_table",
    "settings_table",
]


@dataclass(frozen=True)
class Table:
    """A rendered table: ``header`` ``[K]`` strings and ``rows`` of ``K`` strings each."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    first_column_is_header: bool = True
    diagonal: list[tuple[int, int]] = field(default_factory=list)
    numeric: bool = True


def _reference(metrics: Mapping[str, Any]) -> str:
    return str(metrics.get("settings", {}).get("reference", "fusion"))


def _scopes(metrics: Mapping[str, Any], method: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(label, BLOCK)`` of each site, then of all images."""
    return [(s, method["per_site"][s]) for s in metrics["sites"]] + [
        ("all images", method["overall"])
    ]


def metric_table(metrics: Mapping[str, Any], metric: str) -> Table | None:
    """Rows = methods, columns = sites, overall and mean over sites; cells ``v [lo, hi]``."""
    methods = metrics["methods"]
    if not methods or metric not in next(iter(methods.values()))["overall"]:
        return None
    sites = list(metrics["sites"])
    rows = []
    for name, method in methods.items():
        rows.append(
            [
                name,
                *(format_cell(method["per_site"][s].get(metric)) for s in sites),
                format_cell(method["overall"].get(metric)),
                format_value(method["mean_over_sites"].get(metric)),
            ]
        )
    label = METRIC_LABELS.get(metric, metric)
    note = (
        "value [95% CI]; intervals resample patients/lesions (groups) within each site. "
        "'all images' pools every test image; 'mean over sites' weights each site equally."
    )
    if metric == "ece":
        note += (
            " The ECE is biased upwards on resamples (fewer distinct images per bin), so its "
            "interval can lie above the value; compare methods on the same images instead."
        )
    if metric == "macro_auc" and len(metrics["classes"]) == 2:
        note += " With two classes this is the AUC of the positive class."
    return Table(
        title=f"{label[:1].upper()}{label[1:]} per site",
        header=["method", *sites, "all images", "mean over sites"],
        rows=rows,
        note=note,
    )


def paired_table(metrics: Mapping[str, Any], metric: str = "balanced_accuracy") -> Table | None:
    """Rows = other methods, columns = sites (+ the mean-over-sites margin for balanced accuracy)."""
    paired = metrics.get("paired") or {}
    if not paired:
        return None
    ref = _reference(metrics)
    sites = list(metrics["sites"])
    with_margin = metric == metrics.get("settings", {}).get("margin_metric", "balanced_accuracy")
    rows = []
    for name, by_site in paired.items():
        row = [name, *(format_difference(by_site[s].get(metric)) for s in sites)]
        if with_margin:
            row.append(format_difference(metrics.get("margins", {}).get(name)))
        rows.append(row)
    lower_better = metric in ("ece", "brier")
    label = METRIC_LABELS.get(metric, metric)
    return Table(
        title=f"{ref} minus each other method: {label}",
        header=["compared with", *sites, *(["mean over sites"] if with_margin else [])],
        rows=rows,
        note=(
            f"{ref} − method [95% CI] from the same resamples (paired). "
            + (
                f"Negative means {ref} is better. "
                if lower_better
                else f"Positive means {ref} is better. "
            )
            + "An interval that includes 0 means the data cannot tell the two apart."
        ),
    )


def prevalence_table(metrics: Mapping[str, Any]) -> Table | None:
    """Rows = sites (and all images), columns = test images and each class's share."""
    methods = metrics["methods"]
    if not methods:
        return None
    first = next(iter(methods.values()))
    classes = list(metrics["classes"])
    rows = []
    for label, block in _scopes(metrics, first):
        rows.append(
            [label, str(block["n"]), *(format_percent(block["prevalence"][c]) for c in classes)]
        )
    return Table(
        title="Class prevalence per site",
        header=["site", "images", *classes],
        rows=rows,
        note="Accuracy depends on prevalence; balanced accuracy and AUC much less.",
    )


def per_class_table(metrics: Mapping[str, Any], method: str | None = None) -> Table | None:
    """Sensitivity and AUC of each class per site, for ``method`` (default: the reference)."""
    method = method or _reference(metrics)
    if method not in metrics["methods"]:
        return None
    m = metrics["methods"][method]
    classes = list(metrics["classes"])
    rows = []
    for label, block in _scopes(metrics, m):
        rows.append(
            [
                label,
                *(format_value(block["per_class_sensitivity"][c]) for c in classes),
                *(format_value(block["per_class_auc"][c]) for c in classes),
            ]
        )
    return Table(
        title=f"Per-class sensitivity and AUC of {method}",
        header=[
            "site",
            *(f"sensitivity {c}" for c in classes),
            *(f"AUC {c}" for c in classes),
        ],
        rows=rows,
        note=f"{NA}: the site has no image of that class (or only that class).",
    )


def cross_site_table(metrics: Mapping[str, Any]) -> Table | None:
    """Rows = local experts (training site), columns = test sites; balanced accuracy."""
    matrix = metrics.get("local_cross_site") or {}
    if not matrix:
        return None
    sites = list(metrics["sites"])
    rows, diagonal = [], []
    for i, (expert, by_site) in enumerate(matrix.items()):
        rows.append([f"expert {expert}", *(format_cell(by_site.get(s)) for s in sites)])
        if expert in sites:
            diagonal.append((i, 1 + sites.index(expert)))
    return Table(
        title="Local experts across sites: balanced accuracy",
        header=["trained on \\ tested on", *sites],
        rows=rows,
        note="The diagonal is each expert on its own site; off-diagonal cells show how it "
        "transfers.",
        diagonal=diagonal,
    )


def attention_table(metrics: Mapping[str, Any], method: str) -> Table | None:
    """Rows = test sites, columns = experts; mean fusion weight."""
    by_site = (metrics.get("attention") or {}).get(method)
    if not by_site:
        return None
    experts = list(next(iter(by_site.values())))
    return Table(
        title=f"Mean fusion weight per expert ({method})",
        header=["test site", *(f"expert {e}" for e in experts)],
        rows=[[s, *(format_value(w.get(e)) for e in experts)] for s, w in by_site.items()],
        note="How much the fusion relied on each expert for the images of each site.",
    )


def calibration_table(metrics: Mapping[str, Any]) -> Table | None:
    """ECE and Brier score before/after temperature scaling, per site."""
    cal = metrics.get("calibration") or {}
    if not cal.get("per_site"):
        return None
    cols = [
        k
        for k in ("ece_before", "ece_after", "brier_before", "brier_after")
        if k in next(iter(cal["per_site"].values()))
    ]
    rows = [
        ["all images" if s == "overall" else s, *(format_value(v.get(k)) for k in cols)]
        for s, v in cal["per_site"].items()
    ]
    fitted = f", fitted on {cal['fitted_on']}" if cal.get("fitted_on") else ""
    return Table(
        title=f"Temperature scaling of {cal.get('method', '?')} (T = "
        f"{format_value(cal.get('temperature'), 2)}{fitted})",
        header=["site", *(k.replace("_", " ") for k in cols)],
        rows=rows,
        note="Temperature scaling changes confidence, not the predicted class. Lower is better."
        + (f" No temperature applied: {cal['note']}." if cal.get("note") else ""),
    )


def loso_table(metrics: Mapping[str, Any], metric: str = "balanced_accuracy") -> Table | None:
    """Rows = methods, columns = held-out sites; the metric on the held-out site."""
    loso = metrics.get("leave_one_site_out") or {}
    if not loso:
        return None
    sites = list(loso)
    names: list[str] = []
    for by_method in loso.values():
        names += [n for n in by_method if n not in names]
    rows = [[n, *(format_cell((loso[s].get(n) or {}).get(metric)) for s in sites)] for n in names]
    return Table(
        title=f"Leave-one-site-out: {METRIC_LABELS.get(metric, metric)} on the held-out site",
        header=["method", *(f"{s} held out" for s in sites)],
        rows=rows,
        note="Each column: models built without that site, tested on it (an unseen site).",
    )


def method_legend(metrics: Mapping[str, Any]) -> Table:
    """What each method is, in one line."""
    return Table(
        title="Methods",
        header=["method", "what it is"],
        rows=[[n, describe_method(n)] for n in metrics["methods"]],
        numeric=False,
    )


def settings_table(metrics: Mapping[str, Any]) -> Table:
    """How the intervals were computed."""
    s = metrics.get("settings", {})
    rows = [
        ["bootstrap resamples", str(s.get("n_boot", NA))],
        ["seed", str(s.get("seed", NA))],
        ["interval", f"{round(100 * float(s.get('ci_level', 0.95)))}% percentile bootstrap"],
        ["resampling", str(s.get("resampling", NA))],
        ["calibration bins", str(s.get("ece_bins", NA))],
        ["reference method", str(s.get("reference", NA))],
    ]
    if s.get("positive_class"):
        rows.append(["positive class", str(s["positive_class"])])
    run = metrics.get("run") or {}
    for key in ("run_id", "test_set", "n_images"):
        if key in run:
            rows.append([key.replace("_", " "), str(run[key])])
    return Table(
        title="How this report was computed",
        header=["setting", "value"],
        rows=rows,
        numeric=False,
    )
