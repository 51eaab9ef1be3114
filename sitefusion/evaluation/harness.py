"""Per-site evaluation of every method: the metrics document that reports render.

:func:`evaluate_predictions` scores each method of a :class:`PredictionSet` on the images of each
site and on all images, with group-bootstrap intervals, paired differences against a reference
method, the margins of the reference over the others, the mean fusion weights and the local
experts' cross-site matrix. The result is a JSON-ready dict (``nan`` -> ``None``) following
``metrics_schema.json`` (see :func:`~sitefusion.evaluation.schema.validate_metrics`)::

    {"schema_version": 1, "sites": [...], "classes": [...], "settings": {...},
     "methods": {NAME: {"per_site": {SITE: BLOCK}, "overall": BLOCK,
                        "mean_over_sites": {METRIC: value}}},
     "paired": {NAME: {SITE: {METRIC: CELL}}},          # reference - NAME, same resamples
     "margins": {NAME: CELL},                            # reference - NAME, mean-over-sites BA
     "attention": {NAME: {SITE: {EXPERT: mean weight}}},
     "local_cross_site": {EXPERT: {SITE: CELL}},         # balanced accuracy of local:EXPERT
     "calibration": {},            # filled by the caller, see evaluate_calibration
     "leave_one_site_out": {}}     # filled by the caller, see evaluate_loso

    BLOCK = {METRIC: CELL, ..., "n": int, "prevalence": {CLASS: fraction},
             "per_class_sensitivity": {CLASS: value}, "per_class_auc": {CLASS: value}}
    CELL = {"value": v, "ci95": [low, high]}

Resampling: within each site, groups are drawn with replacement, independently per site (site
``i`` in report order, from 0, uses seed ``[seed, i + 1]``); "overall" draws from all groups
(seed ``seed``). Every method is scored on the same resamples, so paired differences are paired.
The mean-over-sites margins combine the per-site resamples (a bootstrap stratified by site).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.bootstrap import (
    group_bootstrap_weights,
    percentile_ci,
    resampled_metrics,
    single_threaded_blas,
)
from sitefusion.evaluation.calibration import apply_temperature
from sitefusion.evaluation.errors import EvaluationError
from sitefusion.evaluation.predictions import PredictionSet, check_method_name
from sitefusion.evaluation.weighted import BINARY_METRICS, metric_names

__all__ = [
    "ALPHA",
    "MARGIN_METRIC",
    "SCHEMA_VERSION",
    "evaluate_calibration",
    "evaluate_loso",
    "evaluate_predictions",
    "site_seed",
]

SCHEMA_VERSION = 1
#: Intervals are 95 % (the documents' key is ``ci95``).
ALPHA = 0.05
#: The margins compare mean-over-sites balanced accuracy.
MARGIN_METRIC = "balanced_accuracy"
_CLIP = 1e-12  # log(0) guard when temperature-scaling probabilities


def site_seed(seed: int, site_index: int) -> list[int]:
    """Seed of the resamples of the site at ``site_index`` (0-based, report order)."""
    return [int(seed), int(site_index) + 1]


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _cell(value: float, low: float, high: float) -> dict[str, Any]:
    return {"value": _num(value), "ci95": [_num(low), _num(high)]}


def _by_class(values: Mapping[int, float | None], classes: tuple[str, ...]) -> dict[str, Any]:
    return {classes[k]: _num(v) for k, v in values.items()}


def _nanmean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _block(
    y: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray,
    names: tuple[str, ...],
    classes: tuple[str, ...],
    ece_bins: int,
) -> tuple[dict[str, Any], dict[str, float], dict[str, np.ndarray]]:
    """One BLOCK, plus the raw point values and ``[B]`` resampled values of its metrics.

    Point values come from the reference functions of :mod:`~sitefusion.evaluation.metrics`,
    resampled values from :func:`~sitefusion.evaluation.weighted.batched_metrics` (equal to the
    reference functions on each resample).
    """
    n = int(y.shape[0])
    if n == 0:
        values = dict.fromkeys(names, float("nan"))
        dists = {name: np.full(weights.shape[0], np.nan) for name in names}
    else:
        values = {
            "balanced_accuracy": m.balanced_accuracy(y, probs),
            "macro_auc": m.macro_auc(y, probs),
            "accuracy": m.accuracy(y, probs),
            "ece": m.expected_calibration_error(y, probs, ece_bins),
            "brier": m.brier_score(y, probs),
        }
        if set(BINARY_METRICS) & set(names):
            values.update(m.binary_metrics(y, probs[:, 1]))
        dists = resampled_metrics(y, probs, weights, names, n_bins=ece_bins)
    block: dict[str, Any] = {}
    for name in names:
        low, high, _ = percentile_ci(dists[name], ALPHA)
        block[name] = _cell(values[name], low, high)
    block["n"] = n
    block["prevalence"] = {
        c: _num(v) for c, v in zip(classes, m.prevalence(y, len(classes)), strict=True)
    }
    block["per_class_sensitivity"] = _by_class(m.per_class_sensitivity(y, probs), classes)
    block["per_class_auc"] = _by_class(m.per_class_auc(y, probs), classes)
    return block, values, dists


def _difference(a: float, b: float, dist_a: np.ndarray, dist_b: np.ndarray) -> dict[str, Any]:
    low, high, _ = percentile_ci(dist_a - dist_b, ALPHA)
    return _cell(a - b, low, high)


def _check_settings(n_boot: int, ece_bins: int) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise EvaluationError(f"n_boot: expected a positive integer, got {n_boot!r}")
    if int(ece_bins) != ece_bins or ece_bins < 1:
        raise EvaluationError(f"ece_bins: expected a positive integer, got {ece_bins!r}")


def evaluate_predictions(
    preds: PredictionSet,
    n_boot: int = 1000,
    seed: int = 0,
    ece_bins: int = 15,
    reference: str = "fusion",
) -> dict[str, Any]:
    """Score every method of ``preds`` per site and overall; return the metrics document.

    Args:
        preds: the predictions of all methods on the test images.
        n_boot: group-bootstrap resamples per site (and overall).
        seed: base seed of the resamples (see the module docstring for the per-site seeds).
        ece_bins: equal-width confidence bins of the ECE.
        reference: the method the paired differences and margins are taken from
            (``reference - other``). Must be a valid method name; if ``preds`` lacks it,
            ``paired`` and ``margins`` stay empty.

    Returns:
        The JSON-ready document described in the module docstring. ``calibration`` and
        ``leave_one_site_out`` are ``{}``: fill them with :func:`evaluate_calibration` and
        :func:`evaluate_loso`.
    """
    check_method_name(reference, preds.experts)
    _check_settings(n_boot, ece_bins)
    with single_threaded_blas():
        return _evaluate(preds, int(n_boot), int(seed), int(ece_bins), reference)


def _evaluate(
    preds: PredictionSet, n_boot: int, seed: int, ece_bins: int, reference: str
) -> dict[str, Any]:
    metrics = metric_names(preds.n_classes)
    y = preds.labels
    masks = {s: preds.site == s for s in preds.sites}
    weights = {
        s: group_bootstrap_weights(preds.group[masks[s]], n_boot, site_seed(seed, i))
        for i, s in enumerate(preds.sites)
    }
    overall_weights = group_bootstrap_weights(preds.group, n_boot, seed)

    methods: dict[str, Any] = {}
    values: dict[str, dict[str, dict[str, float]]] = {}
    dists: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for method, probs in preds.probs.items():
        per_site: dict[str, Any] = {}
        values[method], dists[method] = {}, {}
        for s in preds.sites:
            per_site[s], values[method][s], dists[method][s] = _block(
                y[masks[s]], probs[masks[s]], weights[s], metrics, preds.classes, ece_bins
            )
        overall, _, _ = _block(y, probs, overall_weights, metrics, preds.classes, ece_bins)
        mean_over_sites = {
            name: _num(float(_nanmean(np.array([values[method][s][name] for s in preds.sites]))))
            for name in metrics
        }
        methods[method] = {
            "per_site": per_site,
            "overall": overall,
            "mean_over_sites": mean_over_sites,
        }

    paired: dict[str, Any] = {}
    margins: dict[str, Any] = {}
    if reference in preds.probs:
        ref_mean, ref_dist = _site_mean(values[reference], dists[reference], preds.sites)
        for other in preds.probs:
            if other == reference:
                continue
            paired[other] = {
                s: {
                    name: _difference(
                        values[reference][s][name],
                        values[other][s][name],
                        dists[reference][s][name],
                        dists[other][s][name],
                    )
                    for name in metrics
                }
                for s in preds.sites
            }
            other_mean, other_dist = _site_mean(values[other], dists[other], preds.sites)
            margins[other] = _difference(ref_mean, other_mean, ref_dist, other_dist)

    attention = {
        method: {
            s: {
                e: (_num(weights_e[masks[s]].mean()) if masks[s].any() else None)
                for e, weights_e in zip(preds.experts, att.T, strict=True)
            }
            for s in preds.sites
        }
        for method, att in preds.attention.items()
    }
    local_cross_site = {
        method.split(":", 1)[1]: {
            s: methods[method]["per_site"][s]["balanced_accuracy"] for s in preds.sites
        }
        for method in preds.probs
        if method.startswith("local:")
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "sites": list(preds.sites),
        "classes": list(preds.classes),
        "settings": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "ci_level": 1.0 - ALPHA,
            "ece_bins": int(ece_bins),
            "reference": reference,
            "margin_metric": MARGIN_METRIC,
            "positive_class": preds.classes[1] if preds.n_classes == 2 else None,
            "resampling": (
                "groups drawn with replacement within each site (site i, from 0 in report "
                "order, seeded [seed, i + 1]); overall draws from all groups (seeded seed)"
            ),
        },
        "methods": methods,
        "paired": paired,
        "margins": margins,
        "attention": attention,
        "local_cross_site": local_cross_site,
        "calibration": {},
        "leave_one_site_out": {},
    }


def _site_mean(
    values: Mapping[str, Mapping[str, float]],
    dists: Mapping[str, Mapping[str, np.ndarray]],
    sites: tuple[str, ...],
) -> tuple[float, np.ndarray]:
    """Mean over sites of :data:`MARGIN_METRIC`: point value and ``[B]`` resampled values."""
    point = float(_nanmean(np.array([values[s][MARGIN_METRIC] for s in sites])))
    resampled = _nanmean(np.stack([dists[s][MARGIN_METRIC] for s in sites]), axis=0)
    return point, resampled


def evaluate_calibration(
    preds: PredictionSet,
    temperature: float,
    method: str = "fusion",
    ece_bins: int = 15,
    fitted_on: str | None = None,
) -> dict[str, Any]:
    """ECE and Brier score of ``method`` before and after temperature scaling, per site.

    ``temperature`` must have been fitted on predictions *other than* these test images (e.g. the
    fusion split; see :func:`~sitefusion.evaluation.calibration.fit_temperature`). The scaled
    probabilities are ``softmax(log(probs) / T)``. Returns the document's ``calibration``
    section::

        {"method": NAME, "temperature": T, "fitted_on": str,
         "per_site": {SITE or "overall": {"ece_before", "ece_after",
                                          "brier_before", "brier_after"}}}

    Sites without images are left out.
    """
    if method not in preds.probs:
        raise UnknownChoiceError("method to temperature-scale", method, preds.probs)
    _check_settings(1, ece_bins)
    before = preds.probs[method]
    after = apply_temperature(np.log(np.clip(before, _CLIP, 1.0)), float(temperature))
    per_site: dict[str, Any] = {}
    scopes = [(s, preds.site == s) for s in preds.sites]
    for key, mask in [*scopes, ("overall", np.ones(preds.n_images, dtype=bool))]:
        if not mask.any():
            continue
        y = preds.labels[mask]
        per_site[key] = {
            "ece_before": _num(m.expected_calibration_error(y, before[mask], ece_bins)),
            "ece_after": _num(m.expected_calibration_error(y, after[mask], ece_bins)),
            "brier_before": _num(m.brier_score(y, before[mask])),
            "brier_after": _num(m.brier_score(y, after[mask])),
        }
    out: dict[str, Any] = {"method": method, "temperature": float(temperature)}
    if fitted_on is not None:
        out["fitted_on"] = fitted_on
    out["per_site"] = per_site
    return out


def evaluate_loso(
    per_site: Mapping[str, PredictionSet],
    n_boot: int = 1000,
    seed: int = 0,
    ece_bins: int = 15,
) -> dict[str, dict[str, Any]]:
    """Leave-one-site-out blocks: ``{HELD_OUT_SITE: {METHOD: BLOCK}}``.

    ``per_site[s]`` holds the predictions of models trained *without* site ``s``; only its images
    of site ``s`` are scored (same BLOCK shape and resampling seeds as
    :func:`evaluate_predictions`). Put the result under the document's ``leave_one_site_out``.
    """
    _check_settings(n_boot, ece_bins)
    out: dict[str, dict[str, Any]] = {}
    for held_out, preds in per_site.items():
        if held_out not in preds.sites:
            raise UnknownChoiceError("held-out site", held_out, preds.sites)
        mask = preds.site == held_out
        if not mask.any():
            raise EvaluationError(
                f"leave_one_site_out[{held_out!r}]: the predictions hold no image of that site"
            )
        names = metric_names(preds.n_classes)
        weights = group_bootstrap_weights(
            preds.group[mask], n_boot, site_seed(seed, preds.sites.index(held_out))
        )
        with single_threaded_blas():
            out[held_out] = {
                method: _block(
                    preds.labels[mask], probs[mask], weights, names, preds.classes, ece_bins
                )[0]
                for method, probs in preds.probs.items()
            }
    return out
