"""Vectorised metrics over many weightings of the same images, for the bootstrap.

A group bootstrap resample is the same set of images with integer weights (how many times each
image's group was drawn). So instead of rebuilding ``B`` resampled arrays and calling a metric
``B`` times, each function here takes a weight matrix ``weights`` ``[B, N]`` and returns the ``[B]``
metric values at once. They equal the reference functions of :mod:`sitefusion.evaluation.metrics`
called with ``sample_weight=weights[b]`` (the tests check that), including ``nan`` where undefined.

:class:`Metric` pairs a reference function with its vectorised twin; :func:`get_metric` builds the
named metrics of a report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.errors import EvaluationError

__all__ = [
    "BINARY_METRICS",
    "CORE_METRICS",
    "BatchedMetricFn",
    "Metric",
    "MetricFn",
    "batched_accuracy",
    "batched_balanced_accuracy",
    "batched_binary_metrics",
    "batched_brier_score",
    "batched_expected_calibration_error",
    "batched_macro_auc",
    "batched_metrics",
    "batched_per_class_auc",
    "get_metric",
    "metric_names",
    "vectorised_counterpart",
]

#: ``(y [N], probs [N, C]) -> value``
MetricFn = Callable[[np.ndarray, np.ndarray], float]
#: ``(y [N], probs [N, C], weights [B, N]) -> [B] values``
BatchedMetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: Metrics reported for every task, in report order.
CORE_METRICS: tuple[str, ...] = ("balanced_accuracy", "macro_auc", "accuracy", "ece", "brier")
#: Extra metrics of two-class tasks (class 1 is the positive class).
BINARY_METRICS: tuple[str, ...] = ("auc", "sensitivity", "specificity")


def _prepare(
    y: np.ndarray, probs: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if probs.ndim != 2 or y.shape != (probs.shape[0],):
        raise EvaluationError(
            f"expected y [N] and probs [N, C], got {list(y.shape)} and {list(probs.shape)}"
        )
    if weights.ndim != 2 or weights.shape[1] != y.shape[0]:
        raise EvaluationError(
            f"weights: expected shape [B, N] with N = {y.shape[0]}, got {list(weights.shape)}"
        )
    return y, probs, weights


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``nan`` where ``den == 0``, without warnings."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring ``nan``; ``nan`` for all-``nan`` rows, without warnings."""
    finite = np.isfinite(values)
    return _divide(np.where(finite, values, 0.0).sum(axis=-1), finite.sum(axis=-1))


def _auc_columns(
    y: np.ndarray, probs: np.ndarray, weights_t: np.ndarray, classes: Sequence[int]
) -> np.ndarray:
    """``[B, len(classes)]`` one-vs-rest AUCs from weights in ``[N, B]`` layout.

    Weighted Mann-Whitney statistic: sort the scores once (shared by all ``B`` weightings), then
    count each positive's weight against the negative weight below it, ties one half. The
    ``[N, B]`` layout makes the sorted gather and the running sum row operations.
    """
    out = np.empty((weights_t.shape[1], len(classes)))
    for j, k in enumerate(classes):
        order = np.argsort(probs[:, k], kind="stable")
        scores = probs[order, k]
        is_pos = (y[order] == k).astype(np.float64)[:, None]
        w_sorted = weights_t[order]  # [N, B]
        pos = w_sorted * is_pos
        neg = w_sorted - pos
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        if starts.shape[0] < scores.shape[0]:  # ties: pool the weights of equal scores
            pos = np.add.reduceat(pos, starts, axis=0)
            neg = np.add.reduceat(neg, starts, axis=0)
        below = np.cumsum(neg, axis=0)
        below -= neg
        below += 0.5 * neg
        out[:, j] = _divide(np.einsum("lb,lb->b", pos, below), pos.sum(axis=0) * neg.sum(axis=0))
    return out


def batched_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray,
    names: Sequence[str] | None = None,
    n_bins: int = 15,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Several metrics under each row of ``weights`` ``[B, N]``, sharing the work.

    Every statistic that is a weighted sum over images (hits and support per class, correct
    predictions, Brier terms, per-bin calibration gaps, binary calls) comes out of *one* product
    ``weights @ V`` with ``V`` ``[N, K]``; AUCs sort each class's scores once.

    Args:
        y: ``[N]`` int labels; probs: ``[N, C]`` probabilities.
        weights: ``[B, N]`` non-negative weights (bootstrap counts).
        names: metric keys (default: :func:`metric_names` of the task), any of
            :data:`CORE_METRICS`, :data:`BINARY_METRICS` (two classes only) and
            ``"per_class_auc"`` (a ``[B, C]`` array).
        n_bins: ECE bins; threshold: binary cut-off on ``probs[:, 1]``.

    Returns:
        ``{name: [B] values}`` (``nan`` where undefined).
    """
    y, probs, weights = _prepare(y, probs, weights)
    n_classes = probs.shape[1]
    names = tuple(metric_names(n_classes) if names is None else names)
    unknown = sorted(set(names) - set(CORE_METRICS) - set(BINARY_METRICS) - {"per_class_auc"})
    if unknown:
        raise UnknownChoiceError("metric", unknown[0], (*CORE_METRICS, *BINARY_METRICS))
    if n_classes != 2 and set(names) & set(BINARY_METRICS):
        raise EvaluationError(f"binary metrics need 2 classes, got {n_classes}")
    pred = m.predicted_labels(probs)
    correct = (pred == y).astype(np.float64)
    conf = probs.max(axis=1)
    onehot = np.eye(n_classes)[y]
    bins = np.eye(n_bins)[m.confidence_bin_index(conf, n_bins)]
    called = (probs[:, 1] >= threshold).astype(np.float64) if n_classes == 2 else correct
    columns = [
        onehot,  # support per class
        onehot * correct[:, None],  # hits per class
        correct[:, None],
        ((probs - onehot) ** 2).sum(axis=1)[:, None],
        bins * (correct - conf)[:, None],  # calibration gap per confidence bin
        np.ones((y.shape[0], 1)),
        (onehot[:, -1] * called)[:, None],  # true positives (two classes)
        (onehot[:, 0] * (1.0 - called))[:, None],  # true negatives (two classes)
    ]
    edges = np.cumsum([0, *(c.shape[1] for c in columns)])
    sums = weights @ np.concatenate(columns, axis=1)
    support, hits, n_correct, brier, gap, total, tp, tn = (
        sums[:, edges[i] : edges[i + 1]] for i in range(len(columns))
    )
    total = total[:, 0]
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "balanced_accuracy":
            out[name] = _nanmean_rows(_divide(hits, support))
        elif name == "accuracy":
            out[name] = _divide(n_correct[:, 0], total)
        elif name == "brier":
            out[name] = _divide(brier[:, 0], total)
        elif name == "ece":
            out[name] = _divide(np.abs(gap).sum(axis=1), total)
        elif name == "sensitivity":
            out[name] = _divide(tp[:, 0], support[:, 1])
        elif name == "specificity":
            out[name] = _divide(tn[:, 0], support[:, 0])
    auc_classes = (
        list(range(n_classes))
        if {"macro_auc", "per_class_auc"} & set(names)
        else [1]
        if "auc" in names
        else []
    )
    if auc_classes:
        aucs = _auc_columns(y, probs, np.ascontiguousarray(weights.T), auc_classes)
        if "macro_auc" in names:
            out["macro_auc"] = _nanmean_rows(aucs)
        if "per_class_auc" in names:
            out["per_class_auc"] = aucs
        if "auc" in names:
            out["auc"] = aucs[:, auc_classes.index(1)]
    return {name: out[name] for name in names}


def batched_accuracy(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` accuracies under each row of ``weights`` ``[B, N]``."""
    return batched_metrics(y, probs, weights, ["accuracy"])["accuracy"]


def batched_balanced_accuracy(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` balanced accuracies (mean recall over the classes with positive weight)."""
    return batched_metrics(y, probs, weights, ["balanced_accuracy"])["balanced_accuracy"]


def batched_per_class_auc(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B, C]`` one-vs-rest AUCs (``nan`` where a class or its rest has no weight)."""
    return batched_metrics(y, probs, weights, ["per_class_auc"])["per_class_auc"]


def batched_macro_auc(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` macro one-vs-rest AUCs over the classes whose AUC is defined."""
    return batched_metrics(y, probs, weights, ["macro_auc"])["macro_auc"]


def batched_expected_calibration_error(
    y: np.ndarray, probs: np.ndarray, weights: np.ndarray, n_bins: int = 15
) -> np.ndarray:
    """``[B]`` top-label ECEs over ``n_bins`` equal-width bins."""
    return batched_metrics(y, probs, weights, ["ece"], n_bins=n_bins)["ece"]


def batched_brier_score(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` multi-class Brier scores."""
    return batched_metrics(y, probs, weights, ["brier"])["brier"]


def batched_binary_metrics(
    y: np.ndarray, probs: np.ndarray, weights: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """``{"auc", "sensitivity", "specificity"}`` as ``[B]`` arrays for a two-class ``probs``."""
    return batched_metrics(y, probs, weights, BINARY_METRICS, threshold=threshold)


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(y, probs) -> float`` and its vectorised twin ``batched``.

    Calling the metric calls ``fn``. ``batched(y, probs, weights [B, N]) -> [B]`` must equal
    ``fn`` on each weighting; the bootstrap uses it when present.
    """

    name: str
    fn: MetricFn
    batched: BatchedMetricFn

    def __call__(self, y: np.ndarray, probs: np.ndarray) -> float:
        """Return the metric of labels ``y`` ``[N]`` and probabilities ``probs`` ``[N, C]``."""
        return self.fn(y, probs)


def metric_names(n_classes: int) -> tuple[str, ...]:
    """The metric keys reported for a task with ``n_classes`` classes, in report order."""
    return CORE_METRICS + (BINARY_METRICS if n_classes == 2 else ())


def _binary(key: str, threshold: float) -> MetricFn:
    def fn(y: np.ndarray, probs: np.ndarray) -> float:
        return m.binary_metrics(y, np.asarray(probs)[:, 1], threshold)[key]

    return fn


def get_metric(name: str, *, n_bins: int = 15, threshold: float = 0.5) -> Metric:
    """Return the :class:`Metric` called ``name`` (one of :data:`CORE_METRICS` or
    :data:`BINARY_METRICS`); ``n_bins`` is the ECE's bin count, ``threshold`` the binary cut-off.
    """
    if name == "balanced_accuracy":
        return Metric(name, m.balanced_accuracy, batched_balanced_accuracy)
    if name == "macro_auc":
        return Metric(name, m.macro_auc, batched_macro_auc)
    if name == "accuracy":
        return Metric(name, m.accuracy, batched_accuracy)
    if name == "brier":
        return Metric(name, m.brier_score, batched_brier_score)
    if name == "ece":
        return Metric(
            name,
            lambda y, p: m.expected_calibration_error(y, p, n_bins),
            lambda y, p, w: batched_expected_calibration_error(y, p, w, n_bins),
        )
    if name in BINARY_METRICS:
        return Metric(
            name,
            _binary(name, threshold),
            lambda y, p, w: batched_binary_metrics(y, p, w, threshold)[name],
        )
    raise UnknownChoiceError("metric", name, CORE_METRICS + BINARY_METRICS)


_COUNTERPARTS: dict[object, BatchedMetricFn] = {
    m.accuracy: batched_accuracy,
    m.balanced_accuracy: batched_balanced_accuracy,
    m.macro_auc: batched_macro_auc,
    m.expected_calibration_error: batched_expected_calibration_error,
    m.brier_score: batched_brier_score,
}


def vectorised_counterpart(metric_fn: object) -> BatchedMetricFn | None:
    """Return the vectorised twin of ``metric_fn`` if it has one, else ``None``.

    Known: a :class:`Metric` (its ``batched``) and the ``(y, probs)`` functions of
    :mod:`~sitefusion.evaluation.metrics` (``accuracy``, ``balanced_accuracy``, ``macro_auc``,
    ``expected_calibration_error`` with its default 15 bins, ``brier_score``).
    """
    if isinstance(metric_fn, Metric):
        return metric_fn.batched
    return _COUNTERPARTS.get(metric_fn)
