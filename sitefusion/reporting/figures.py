"""The report's figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No pyplot and no global backend switch: each function builds a ``Figure`` on its own
``FigureCanvasAgg``, so rendering has no side effect on the caller's matplotlib state and is safe
without a display. Figures only draw numbers from the metrics document or curves computed by
:mod:`sitefusion.evaluation.curves`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np

from sitefusion.evaluation.curves import confusion, macro_roc_curve, reliability_bins

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Panel",
    "confusion_figure",
    "heatmap_figure",
    "method_colours",
    "metric_bars_figure",
    "reliability_figure",
    "roc_figure",
]

#: One panel of a per-site figure: title, labels ``[n]`` and, per series, probabilities ``[n, C]``.
Panel = tuple[str, np.ndarray, Mapping[str, np.ndarray]]

_DPI = 100


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = BytesIO()
    # No "Software" text chunk: the report carries no URLs, not even inside images.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """A stable colour per method (report order), the reference first in a strong blue."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {name: cmap(i % 20) for i, name in enumerate(methods)}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def metric_bars_figure(
    metrics: Mapping[str, Any], metric: str, chance: float | None = None
) -> bytes | None:
    """Grouped bars: one group per site (and all images), one bar per method, 95% CI whiskers."""
    methods = list(metrics["methods"])
    if not methods or metric not in metrics["methods"][methods[0]]["overall"]:
        return None
    groups = [*metrics["sites"], "all images"]
    colours = method_colours(methods)
    width = min(10.5, max(6.5, 3.5 + 0.12 * len(groups) * len(methods)))
    fig = _figure(width, 4.4)
    ax = fig.add_subplot()
    bar = 0.8 / len(methods)
    x = np.arange(len(groups))
    for j, name in enumerate(methods):
        m = metrics["methods"][name]
        cells = [m["per_site"][s][metric] for s in metrics["sites"]] + [m["overall"][metric]]
        values = np.array([c["value"] if _finite(c["value"]) else np.nan for c in cells])
        low = np.array([c["ci95"][0] if _finite(c["ci95"][0]) else np.nan for c in cells])
        high = np.array([c["ci95"][1] if _finite(c["ci95"][1]) else np.nan for c in cells])
        err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
        ax.bar(
            x - 0.4 + bar * (j + 0.5),
            values,
            bar,
            yerr=np.nan_to_num(err),
            capsize=1.5,
            color=colours[name],
            edgecolor="black" if j == 0 else "none",
            linewidth=0.6,
            label=name,
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
        )
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(groups, _ns(metrics), strict=True)])
    ax.set_ylim(0, 1.05 if metric not in ("brier",) else None)
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=max(1, min(len(methods) + 1, 6, int(width / 1.6))),
        fontsize="small",
        frameon=False,
    )
    return _png(fig)


def _ns(metrics: Mapping[str, Any]) -> list[int]:
    first = next(iter(metrics["methods"].values()))
    return [first["per_site"][s]["n"] for s in metrics["sites"]] + [first["overall"]["n"]]


def _grid(n_panels: int, cols: int, size: float, extra_height: float = 0.0) -> Figure:
    cols = max(1, min(cols, n_panels))
    rows = math.ceil(n_panels / cols)
    return _figure(size * cols, size * rows + extra_height)


def _axes(fig: Figure, n_panels: int, cols: int) -> list[Axes]:
    cols = max(1, min(cols, n_panels))
    rows = math.ceil(n_panels / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]


def roc_figure(panels: Sequence[Panel], colours: Mapping[str, Any]) -> bytes:
    """ROC curves per panel (site): macro-average one-vs-rest, or the binary ROC for 2 classes."""
    fig = _grid(len(panels), 4, 2.6)
    for ax, (title, y, series) in zip(_axes(fig, len(panels), 4), panels, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for name, probs in series.items():
            curve = macro_roc_curve(y, probs) if y.size else None
            if curve is None:
                continue
            auc = f"{curve.auc:.3f}" if _finite(curve.auc) else "n/a"
            ax.plot(curve.fpr, curve.tpr, color=colours.get(name), label=f"{name} ({auc})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize="small", title="AUC", title_fontsize="small")
        else:
            ax.text(0.5, 0.5, "undefined\n(one class)", ha="center", va="center")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("1 − specificity")
        ax.set_ylabel("sensitivity")
        ax.set_aspect("equal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    return _png(fig)


def confusion_figure(rows: Sequence[tuple[str, Sequence[Panel]]], classes: Sequence[str]) -> bytes:
    """Confusion matrices: one row of panels per method, one panel per site; shading = row %."""
    n_cols = max(len(panels) for _, panels in rows)
    size = 2.0 + 0.25 * max(0, len(classes) - 3)
    fig = _figure(size * n_cols, size * len(rows) + 0.3)
    short = [c if len(c) <= 10 else c[:9] + "…" for c in classes]
    for r, (method, panels) in enumerate(rows):
        for c, (title, y, series) in enumerate(panels):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            counts = confusion(y, series[method], len(classes))
            totals = counts.sum(axis=1, keepdims=True)
            share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(
                        j,
                        i,
                        f"{counts[i, j]}",
                        ha="center",
                        va="center",
                        fontsize="small",
                        color="white" if share[i, j] > 0.6 else "black",
                    )
            ax.set_xticks(range(len(classes)), short, rotation=45, ha="right", fontsize="x-small")
            ax.set_yticks(range(len(classes)), short, fontsize="x-small")
            ax.set_title(title, fontsize="small")
            if c == 0:
                ax.set_ylabel(f"{method}\ntrue class")
            if r == len(rows) - 1:
                ax.set_xlabel("predicted class")
    return _png(fig)


def reliability_figure(
    panels: Sequence[Panel], colours: Mapping[str, Any], n_bins: int = 15
) -> bytes:
    """Reliability diagrams per panel: accuracy vs mean confidence in each confidence bin.

    Marker area follows the number of images in the bin; each panel lists the series' ECE.
    """
    fig = _grid(len(panels), 4, 2.6, extra_height=0.4)
    names = list(panels[0][2]) if panels else []
    for ax, (title, y, series) in zip(_axes(fig, len(panels), 4), panels, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        eces = []
        for name, probs in series.items():
            if not y.size:
                continue
            bins = reliability_bins(y, probs, n_bins)
            seen = bins.count > 0
            colour = colours.get(name)
            ax.plot(bins.confidence[seen], bins.accuracy[seen], color=colour, linewidth=1)
            # Marker area ~ images in the bin: sparse bins are noisy and should look it.
            ax.scatter(
                bins.confidence[seen],
                bins.accuracy[seen],
                s=4 + 200 * bins.count[seen] / max(1, int(bins.count.sum())),
                color=colour,
                zorder=3,
            )
            eces.append(f"ECE {bins.ece:.3f}" if len(series) == 1 else f"{bins.ece:.3f}")
        if eces:
            label = eces[0] if len(eces) == 1 else "ECE " + " → ".join(eces)
            ax.text(
                0.97,
                0.04,
                label,
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize="small",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
            )
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("confidence (top class)")
        ax.set_ylabel("accuracy")
        ax.set_aspect("equal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    if names:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours.get(n), marker="o", label=n) for n in names]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(names), frameon=False)
    return _png(fig)


def heatmap_figure(
    panels: Sequence[tuple[str, np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
    vmax: float = 1.0,
    highlight: Sequence[tuple[int, int]] = (),
) -> bytes:
    """Annotated heatmaps side by side, one per ``(title, values [R, K])`` panel, one scale.

    ``nan`` cells read "n/a"; cells in ``highlight`` (row, column) are outlined.
    """
    from matplotlib.patches import Rectangle

    rows, cols = panels[0][1].shape
    width = max(4.5, (0.9 + 0.6 * cols) * len(panels) + 1.0)
    fig = _figure(width, 1.6 + 0.5 * rows)
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    image = None
    for k, (ax, (title, values)) in enumerate(zip(axes, panels, strict=True)):
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=vmax)
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                dark = bool(np.isfinite(v) and v < 0.6 * vmax)  # viridis is dark at the low end
                ax.text(
                    j,
                    i,
                    f"{v:.2f}" if np.isfinite(v) else "n/a",
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="white" if dark else "black",
                )
        for i, j in highlight:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        ax.set_xticks(range(cols), list(col_labels), rotation=30, ha="right")
        ax.set_yticks(range(rows), list(row_labels) if k == 0 else [])
        ax.set_xlabel(xlabel)
        if k == 0:
            ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8)
    return _png(fig)
