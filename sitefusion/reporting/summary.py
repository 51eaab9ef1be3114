"""The plain-language summary at the top of every report, read off the metrics document."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from sitefusion.evaluation.method_families import POOLED, RANDOM_FEATURES
from sitefusion.reporting.formatting import format_value

__all__ = ["MISSED_CLASS_MIN", "SMALL_SITE", "Verdict", "summary_points", "verdict"]

Verdict = Literal["better", "worse", "noise", "undefined"]
#: Sites with fewer test images than this get a "wide intervals" warning.
SMALL_SITE = 50
#: A class the reference never recognises at a site is called out from this many images on.
MISSED_CLASS_MIN = 5


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def verdict(cell: Mapping[str, Any] | None, lower_is_better: bool = False) -> Verdict:
    """Read a ``reference - other`` difference cell: is the reference better, worse, or noise?

    ``better`` when the whole 95% interval is on the reference's good side of 0, ``worse`` when
    it is on the other side, ``noise`` when it includes 0.
    """
    if not cell or not _finite(cell.get("value")):
        return "undefined"
    low, high = (cell.get("ci95") or [None, None])[:2]
    if not (_finite(low) and _finite(high)):
        return "undefined"
    if low > 0:
        return "worse" if lower_is_better else "better"
    if high < 0:
        return "better" if lower_is_better else "worse"
    return "noise"


def _diff(cell: Mapping[str, Any]) -> str:
    low, high = cell["ci95"]
    return f"{cell['value']:+.3f} (95% CI {low:+.2f} to {high:+.2f})"


def _headline(metrics: Mapping[str, Any], ref: str) -> list[str]:
    methods = metrics["methods"]
    sites = list(metrics["sites"])
    if ref not in methods:
        ranked = sorted(
            (m for m in methods if _finite(methods[m]["mean_over_sites"]["balanced_accuracy"])),
            key=lambda m: -methods[m]["mean_over_sites"]["balanced_accuracy"],
        )
        best = f" The highest mean balanced accuracy is {ranked[0]}'s." if ranked else ""
        return [f"There are no {ref} predictions in this evaluation, so no comparisons.{best}"]
    mean = methods[ref]["mean_over_sites"]["balanced_accuracy"]
    per_site = [methods[ref]["per_site"][s]["balanced_accuracy"]["value"] for s in sites]
    finite = [v for v in per_site if _finite(v)]
    spread = (
        f" (from {min(finite):.3f} to {max(finite):.3f} across sites)" if len(finite) > 1 else ""
    )
    return [
        f"{ref[:1].upper()}{ref[1:]} reaches a balanced accuracy of {format_value(mean)} "
        "averaged over the "
        f"{len(sites)} site{'s' if len(sites) != 1 else ''}{spread}."
    ]


def _versus(metrics: Mapping[str, Any], ref: str, other: str, what: str) -> list[str]:
    margin = (metrics.get("margins") or {}).get(other)
    by_site = (metrics.get("paired") or {}).get(other)
    if margin is None or by_site is None:
        return []
    v = verdict(margin)
    if v == "undefined":
        return [f"{ref} vs {other}: the difference is undefined on this test set."]
    reading = {
        "better": f"{ref} is better",
        "worse": f"{other} is better",
        "noise": "within noise (the interval includes 0)",
    }[v]
    verdicts = {s: verdict(by_site[s]["balanced_accuracy"]) for s in metrics["sites"]}
    return [
        f"Compared with {other} ({what}), {ref}'s mean balanced accuracy over sites differs by "
        f"{_diff(margin)}: {reading}. {_per_site(ref, verdicts)}"
    ]


def _per_site(ref: str, verdicts: Mapping[str, Verdict]) -> str:
    """``Per site, fusion is better at A and indistinguishable at B, C.``"""
    wording = {"better": "better at", "noise": "indistinguishable at", "worse": "worse at"}
    groups = {k: [s for s, v in verdicts.items() if v == k] for k in wording}
    if len(verdicts) > 1 and len(groups["noise"]) == len(verdicts):
        return "Per site, every difference is within noise."
    parts = [f"{wording[k]} {', '.join(sites)}" for k, sites in groups.items() if sites]
    if not parts:
        return ""
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Per site, {ref} is {body}."


def _random_features(metrics: Mapping[str, Any], ref: str) -> list[str]:
    margin = (metrics.get("margins") or {}).get(RANDOM_FEATURES.name)
    if margin is None:
        return []
    v = verdict(margin)
    if v == "undefined":
        return []
    text = (
        f"The trained experts contribute {_diff(margin)} mean balanced accuracy over the "
        f"random-features control (the same fusion, trained from the untrained experts)"
    )
    if v == "better":
        return [text + "; this margin is what training the site experts buys."]
    if v == "worse":
        return [
            text + "; the whole interval is below 0: the fusion does worse with the trained "
            "experts than with untrained ones. Treat the fusion results with caution."
        ]
    return [
        text + "; the interval includes 0, so this test set cannot show that the trained "
        "experts add anything over random features. Treat the fusion results with caution."
    ]


def _local_transfer(metrics: Mapping[str, Any]) -> list[str]:
    matrix = metrics.get("local_cross_site") or {}
    own: list[float] = []
    other: list[float] = []
    for expert, by_site in matrix.items():
        for site, cell in by_site.items():
            if cell and _finite(cell.get("value")):
                (own if site == expert else other).append(cell["value"])
    if not own or not other:
        return []
    return [
        f"Local experts reach {sum(own) / len(own):.3f} balanced accuracy on their own site "
        f"but {sum(other) / len(other):.3f} on the other sites (averages): the site shift "
        "that fusion has to bridge."
    ]


def _calibration(metrics: Mapping[str, Any]) -> list[str]:
    cal = metrics.get("calibration") or {}
    overall = (cal.get("per_site") or {}).get("overall") or {}
    before, after = overall.get("ece_before"), overall.get("ece_after")
    if not (_finite(before) and _finite(after)):
        return []
    if cal.get("note"):
        return [
            f"No temperature scaling of {cal['method']}: {cal['note']}. Its expected calibration "
            f"error over all images is {before:.3f}."
        ]
    return [
        f"Temperature scaling (T = {cal['temperature']:.2f}) changes {cal['method']}'s "
        f"expected calibration error over all images from {before:.3f} to {after:.3f} "
        "(confidence only; predictions are unchanged)."
    ]


def _missed_classes(metrics: Mapping[str, Any], ref: str) -> list[str]:
    """Classes with at least ``MISSED_CLASS_MIN`` images at a site of which ``ref`` finds none."""
    methods = metrics["methods"]
    if ref not in methods:
        return []
    out = []
    for site in metrics["sites"]:
        block = methods[ref]["per_site"][site]
        n = block.get("n") or 0
        for cls, sens in (block.get("per_class_sensitivity") or {}).items():
            count = round((block.get("prevalence") or {}).get(cls, 0.0) * n)
            if sens != 0 or count < MISSED_CLASS_MIN:
                continue
            text = (
                f"{ref[:1].upper()}{ref[1:]} recognises none of the {count} {cls} images at {site}"
            )
            pooled = (methods.get(POOLED.name) or {}).get("per_site", {}).get(site, {})
            other = (pooled.get("per_class_sensitivity") or {}).get(cls)
            if _finite(other):
                text += f" (pooled: {round(other * count)} of {count})"
            out.append(text + f"; do not rely on {ref} for {cls} there without more data.")
    return out


def _caveats(metrics: Mapping[str, Any]) -> list[str]:
    methods = metrics["methods"]
    first = next(iter(methods.values()))
    out = []
    small = [
        f"{s} ({first['per_site'][s]['n']})"
        for s in metrics["sites"]
        if first["per_site"][s]["n"] < SMALL_SITE
    ]
    if small:
        out.append(
            f"Few test images at {', '.join(small)}: intervals there are wide; read them, not "
            "the point values."
        )
    no_auc = [
        s for s in metrics["sites"] if not _finite(first["per_site"][s]["macro_auc"]["value"])
    ]
    if no_auc:
        out.append(
            f"Macro AUC is undefined (n/a) at {', '.join(no_auc)}: the site holds a single class."
        )
    return out


def _overlap(metrics: Mapping[str, Any]) -> list[str]:
    overlap = (metrics.get("run") or {}).get("overlap_with_training") or {}
    n = overlap.get("images")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return []
    total = (metrics.get("run") or {}).get("n_images")
    of = f" of the {total}" if _finite(total) else ""
    return [
        f"Warning: {n}{of} test images were used to train this run (the same image, or another "
        "image of the same patient or lesion, in its training, validation or fusion split). "
        "Every figure below is optimistic: this is not an evaluation on unseen data."
    ]


def summary_points(metrics: Mapping[str, Any]) -> list[str]:
    """The report's opening sentences, in order, as plain text (no markup)."""
    ref = str(metrics.get("settings", {}).get("reference", "fusion"))
    points = _overlap(metrics)
    points += _headline(metrics, ref)
    points += _versus(metrics, ref, POOLED.name, "one model trained on all sites pooled")
    points += _random_features(metrics, ref)
    points += _missed_classes(metrics, ref)
    points += _local_transfer(metrics)
    points += _calibration(metrics)
    points.append(
        "Differences inside the 95% confidence intervals are noise: when an interval of a "
        "difference includes 0, this test set cannot tell the two methods apart. Intervals "
        "resample patients/lesions rather than images, because images of one patient are not "
        "independent."
    )
    points += _caveats(metrics)
    return points
