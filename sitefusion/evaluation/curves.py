"""Curves behind the report's figures, as pure functions: ROC, confusion matrix, reliability bins.

Reporting draws these; it computes nothing itself. Inputs are labels ``y`` ``[N]`` and
probabilities ``probs`` ``[N, C]`` of one method on one set of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, roc_curve

from sitefusion.evaluation import metrics as m

__all__ = [
    "ReliabilityBins",
    "RocCurve",
    "confusion",
    "macro_roc_curve",
    "reliability_bins",
    "roc_curve_ovr",
]


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve: false-positive rates ``fpr`` ``[P]``, true-positive rates ``tpr`` ``[P]``."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability diagram over equal-width confidence bins.

    Attributes:
        edges: ``[n_bins + 1]`` bin edges on ``[0, 1]``.
        count: ``[n_bins]`` images per bin.
        confidence: ``[n_bins]`` mean top-label confidence per bin (``nan`` when empty).
        accuracy: ``[n_bins]`` fraction correct per bin (``nan`` when empty).
        ece: the expected calibration error these bins give.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def roc_curve_ovr(y: np.ndarray, probs: np.ndarray, k: int) -> RocCurve | None:
    """One-vs-rest ROC curve of class ``k`` (score ``probs[:, k]``); ``None`` if undefined."""
    y = np.asarray(y)
    positive = y == k
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, np.asarray(probs)[:, k])
    auc = m.per_class_auc(y, probs)[k]
    return RocCurve(fpr, tpr, float("nan") if auc is None else auc)


def macro_roc_curve(y: np.ndarray, probs: np.ndarray, n_points: int = 201) -> RocCurve | None:
    """Macro-average one-vs-rest ROC curve; the binary ROC (class 1) for two classes.

    The curves of the classes whose AUC is defined are interpolated on ``n_points`` evenly spaced
    false-positive rates and averaged (as in scikit-learn's ROC example); ``auc`` is
    :func:`~sitefusion.evaluation.metrics.macro_auc`. ``None`` when no class's curve is defined.
    """
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return roc_curve_ovr(y, probs, 1)
    grid = np.linspace(0.0, 1.0, n_points)
    curves = [c for k in range(probs.shape[1]) if (c := roc_curve_ovr(y, probs, k)) is not None]
    if not curves:
        return None
    tpr = np.mean([np.interp(grid, c.fpr, c.tpr) for c in curves], axis=0)
    tpr[0] = 0.0
    return RocCurve(grid, tpr, m.macro_auc(y, probs))


def confusion(y: np.ndarray, probs: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``[C, C]`` confusion counts, rows = true class, columns = predicted class (argmax)."""
    probs = np.asarray(probs)
    c = probs.shape[1] if n_classes is None else n_classes
    return np.asarray(
        confusion_matrix(np.asarray(y), m.predicted_labels(probs), labels=np.arange(c)),
        dtype=np.int64,
    )


def reliability_bins(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin images by top-label confidence (as the ECE does) and return per-bin statistics."""
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (m.predicted_labels(probs) == y).astype(np.float64)
    bins = m.confidence_bin_index(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(
        edges=np.linspace(0.0, 1.0, n_bins + 1),
        count=count,
        confidence=np.where(count > 0, mean_conf, np.nan),
        accuracy=np.where(count > 0, acc, np.nan),
        ece=m.expected_calibration_error(y, probs, n_bins),
    )
