"""Classification metrics as pure functions: arrays in, numbers out.

Every function takes the labels ``y`` (``[N]`` int in ``[0, C)``) and the class probabilities
``probs`` (``[N, C]``, rows summing to 1) of one set of images, plus an optional non-negative
``sample_weight`` (``[N]``; integer weights equal repeating images, which is how the bootstrap
uses them). The predicted class is ``argmax(probs)`` (ties go to the lowest class index).

A metric that is undefined on its input returns ``nan`` (per-class dicts hold ``None``), never
raises: e.g. an AUC needs images of the class *and* of another class, a sensitivity needs images of
the class. Empty inputs give ``nan`` everywhere. scikit-learn computes whatever it offers.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    recall_score,
    roc_auc_score,
)

from sitefusion.evaluation.errors import EvaluationError

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "binary_metrics",
    "brier_score",
    "confidence_bin_index",
    "expected_calibration_error",
    "macro_auc",
    "per_class_auc",
    "per_class_sensitivity",
    "predicted_labels",
    "prevalence",
]

NAN = float("nan")


def _check(
    y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1:
        raise EvaluationError(f"y: expected shape [N], got {list(y.shape)}")
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise EvaluationError(
            f"probs: expected shape [N, C] with N = {y.shape[0]} (len(y)), got {list(probs.shape)}"
        )
    if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= probs.shape[1]):
        raise EvaluationError(
            f"y: expected integer labels in [0, {probs.shape[1]}) (C = probs.shape[1]), "
            f"got dtype {y.dtype} with range [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64), probs, _check_weight(sample_weight, y.shape[0])


def _check_weight(sample_weight: np.ndarray | None, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise EvaluationError(
            f"sample_weight: expected {n} finite non-negative weights, got shape {list(w.shape)}"
        )
    return w


def _present(y: np.ndarray, w: np.ndarray | None, n_classes: int) -> np.ndarray:
    """``[C]`` weight of each class in ``y`` (counts when unweighted)."""
    return np.bincount(y, weights=w, minlength=n_classes).astype(np.float64)


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Return the ``[N]`` predicted classes ``argmax(probs, axis=1)`` of ``[N, C]`` probs."""
    return np.asarray(np.argmax(np.asarray(probs), axis=1), dtype=np.int64)


def accuracy(y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Fraction of images whose predicted class equals the label; ``nan`` when empty."""
    y, probs, w = _check(y, probs, sample_weight)
    if y.size == 0 or (w is not None and w.sum() == 0):
        return NAN
    return float(accuracy_score(y, predicted_labels(probs), sample_weight=w))


def balanced_accuracy(
    y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Mean sensitivity (recall) over the classes present in ``y``; ``nan`` when empty.

    Equals scikit-learn's ``balanced_accuracy_score``: classes absent from ``y`` are left out of
    the mean (their recall is undefined), so a site without any image of class k is scored on the
    other classes only.
    """
    y, probs, w = _check(y, probs, sample_weight)
    present = np.flatnonzero(_present(y, w, probs.shape[1]) > 0)
    if present.size == 0:
        return NAN
    return float(
        recall_score(
            y,
            predicted_labels(probs),
            labels=present,
            average="macro",
            sample_weight=w,
            zero_division=np.nan,
        )
    )


def per_class_sensitivity(
    y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[int, float | None]:
    """Sensitivity (recall) of each class ``{k: value}``; ``None`` for classes absent from ``y``."""
    y, probs, w = _check(y, probs, sample_weight)
    n_classes = probs.shape[1]
    support = _present(y, w, n_classes)
    out: dict[int, float | None] = dict.fromkeys(range(n_classes))
    if support.sum() == 0:
        return out
    rec = recall_score(
        y,
        predicted_labels(probs),
        labels=np.arange(n_classes),
        average=None,
        sample_weight=w,
        zero_division=np.nan,
    )
    for k in range(n_classes):
        if support[k] > 0:
            out[k] = float(rec[k])
    return out


def per_class_auc(
    y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[int, float | None]:
    """One-vs-rest ROC AUC of each class ``{k: AUC(y == k, probs[:, k])}``.

    ``None`` where undefined: when ``y`` has no image of class k, or only images of class k.
    Tied scores count one half (the trapezoidal ROC area).
    """
    y, probs, w = _check(y, probs, sample_weight)
    n_classes = probs.shape[1]
    support = _present(y, w, n_classes)
    total = support.sum()
    out: dict[int, float | None] = dict.fromkeys(range(n_classes))
    for k in range(n_classes):
        if 0 < support[k] < total:
            out[k] = float(roc_auc_score(y == k, probs[:, k], sample_weight=w))
    return out


def macro_auc(y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Unweighted mean of the one-vs-rest AUCs of the classes present in ``y``.

    A class's AUC is defined when ``y`` holds images of that class and of another one, so the mean
    runs over the classes present (scikit-learn's ``roc_auc_score(multi_class="ovr",
    average="macro")`` when all classes are present). ``nan`` when no class's AUC is defined,
    i.e. when ``y`` holds a single class (or nothing). For two classes this is the binary AUC.
    """
    values = [v for v in per_class_auc(y, probs, sample_weight).values() if v is not None]
    return float(np.mean(values)) if values else NAN


def confidence_bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Return the ``[N]`` bin of each confidence in ``n_bins`` equal-width bins of ``[0, 1]``.

    Bins are right-closed, ``(k / n_bins, (k + 1) / n_bins]`` (bin 0 also holds 0), like
    scikit-learn's ``calibration_curve``.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise EvaluationError(f"n_bins: expected a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return np.searchsorted(edges[1:-1], np.asarray(confidence, dtype=np.float64), side="left")


def expected_calibration_error(
    y: np.ndarray,
    probs: np.ndarray,
    n_bins: int = 15,
    sample_weight: np.ndarray | None = None,
) -> float:
    """Top-label expected calibration error over ``n_bins`` equal-width confidence bins.

    ``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``, where the confidence of an
    image is its largest probability and ``accuracy_b`` the fraction of correct predictions among
    the ``n_b`` images whose confidence falls in bin ``b`` (see :func:`confidence_bin_index`).
    Empty bins contribute nothing. ``nan`` when empty.
    """
    y, probs, w = _check(y, probs, sample_weight)
    weight = np.ones(y.shape[0]) if w is None else w
    total = weight.sum()
    if total == 0:
        return NAN
    conf = probs.max(axis=1)
    correct = (predicted_labels(probs) == y).astype(np.float64)
    bins = confidence_bin_index(conf, n_bins)
    gap = np.bincount(bins, weights=weight * (correct - conf), minlength=n_bins)
    return float(np.abs(gap).sum() / total)


def brier_score(y: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Multi-class Brier score: mean over images of ``sum_k (probs[k] - [y == k])**2``.

    Ranges over ``[0, 2]``; for two classes it is twice the usual binary Brier score. ``nan`` when
    empty.
    """
    y, probs, w = _check(y, probs, sample_weight)
    if y.size == 0 or (w is not None and w.sum() == 0):
        return NAN
    return float(
        brier_score_loss(
            y,
            probs,
            labels=np.arange(probs.shape[1]),
            sample_weight=w,
            scale_by_half=False,
        )
    )


def binary_metrics(
    y: np.ndarray,
    p_pos: np.ndarray,
    threshold: float = 0.5,
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """AUC, sensitivity and specificity of a two-class task.

    Args:
        y: ``[N]`` labels in ``{0, 1}``; 1 is the positive class.
        p_pos: ``[N]`` probability of the positive class.
        threshold: an image is called positive when ``p_pos >= threshold`` (at 0.5 this differs
            from the argmax only for exact ties, which argmax gives to class 0).
        sample_weight: optional ``[N]`` non-negative weights.

    Returns:
        ``{"auc", "sensitivity", "specificity"}``; each ``nan`` where undefined (AUC needs both
        classes, sensitivity positives, specificity negatives).
    """
    y = np.asarray(y)
    p_pos = np.asarray(p_pos, dtype=np.float64)
    if y.ndim != 1 or p_pos.shape != y.shape:
        raise EvaluationError(
            f"binary_metrics: expected y and p_pos of the same shape [N], "
            f"got {list(y.shape)} and {list(p_pos.shape)}"
        )
    if y.size and (y.dtype.kind not in "iu" or not np.all((y == 0) | (y == 1))):
        raise EvaluationError(f"binary_metrics: expected labels in {{0, 1}}, got {np.unique(y)}")
    w = _check_weight(sample_weight, y.shape[0])
    if y.size == 0:
        return {"auc": NAN, "sensitivity": NAN, "specificity": NAN}
    y = y.astype(np.int64)
    called = (p_pos >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, called, labels=[0, 1], sample_weight=w).ravel()
    pos, neg = tp + fn, tn + fp
    auc = float(roc_auc_score(y, p_pos, sample_weight=w)) if pos > 0 and neg > 0 else NAN
    return {
        "auc": auc,
        "sensitivity": float(tp / pos) if pos > 0 else NAN,
        "specificity": float(tn / neg) if neg > 0 else NAN,
    }


def prevalence(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Return the ``[C]`` fraction of images of each class (``nan`` everywhere when empty)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise EvaluationError(f"y: expected shape [N], got {list(y.shape)}")
    if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes):
        raise EvaluationError(f"y: expected integer labels in [0, {n_classes})")
    if y.size == 0:
        return np.full(n_classes, np.nan)
    return np.bincount(y.astype(np.int64), minlength=n_classes) / y.size
