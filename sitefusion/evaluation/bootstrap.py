"""Group bootstrap confidence intervals and paired differences.

Images of one lesion or patient are not independent, so a resample draws *groups* with
replacement and takes all images of each drawn group. A resample is then the original images with
integer weights (how often each image's group was drawn): :func:`group_bootstrap_weights` builds
those weights ``[B, N]`` once, and metrics with a vectorised twin
(:mod:`sitefusion.evaluation.weighted`) are evaluated on all ``B`` resamples in a few array
operations. Other ``(y, probs) -> float`` callables work too, one resample at a time.

Intervals are percentile intervals over the resamples where the metric is defined; resamples giving
``nan`` (e.g. an AUC on a resample holding one class) are skipped and counted in ``n_used``.
Everything is deterministic given ``seed`` (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sitefusion.evaluation.errors import EvaluationError
from sitefusion.evaluation.weighted import batched_metrics, vectorised_counterpart

__all__ = [
    "BootstrapResult",
    "Seed",
    "group_bootstrap_ci",
    "group_bootstrap_weights",
    "paired_bootstrap_difference",
    "percentile_ci",
    "resampled_metrics",
    "resampled_values",
    "single_threaded_blas",
]

#: What ``numpy.random.default_rng`` accepts as a seed here: an int or a sequence of ints.
Seed = int | Sequence[int]

# Bound the temporaries of the vectorised metrics (a few [rows, N] float64 arrays) to ~32 MB each.
_MAX_CHUNK_ELEMENTS = 4_000_000


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the enclosed code with one BLAS thread (restored on exit).

    The bootstrap's products (``[B, N] @ [N, K]`` with small ``K``) are memory-bound; on shared
    cores a multi-threaded BLAS spends far more time synchronising than computing (measured: a
    ``[1000, 1300]`` matrix-vector product takes 16 ms with two contended threads, 0.4 ms with
    one).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with its percentile bootstrap interval.

    Attributes:
        value: the metric (or difference) on the original data; ``nan`` if undefined there.
        ci_low: lower bound (the ``alpha / 2`` quantile of the resampled values).
        ci_high: upper bound (the ``1 - alpha / 2`` quantile).
        n_used: resamples where the metric was defined (the interval is over those).
        n_boot: resamples drawn.
        alpha: one minus the interval's coverage.
    """

    value: float
    ci_low: float
    ci_high: float
    n_used: int
    n_boot: int
    alpha: float = 0.05

    @property
    def ci(self) -> tuple[float, float]:
        """``(ci_low, ci_high)``."""
        return (self.ci_low, self.ci_high)


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise EvaluationError(f"n_boot: expected a positive integer, got {n_boot!r}")
    return int(n_boot)


def group_bootstrap_weights(groups: np.ndarray, n_boot: int = 1000, seed: Seed = 0) -> np.ndarray:
    """Draw ``n_boot`` group resamples of ``N`` images as a ``[B, N]`` float64 count matrix.

    Each resample draws ``G`` groups uniformly with replacement out of the ``G`` distinct values
    of ``groups`` (``[N]``); entry ``[b, i]`` is how many times image ``i``'s group was drawn, so
    all images of a group come along together. Groups are numbered in sorted order, so the
    result depends only on ``groups`` and ``seed``.
    """
    n_boot = _check_n_boot(n_boot)
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise EvaluationError(f"groups: expected shape [N], got {list(groups.shape)}")
    if groups.size == 0:
        return np.zeros((n_boot, 0))
    _, codes = np.unique(groups, return_inverse=True)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    offsets = (np.arange(n_boot) * n_groups)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_groups)
    return counts.reshape(n_boot, n_groups)[:, codes.ravel()].astype(np.float64)


def resampled_values(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Evaluate ``metric_fn`` on every resample given by ``weights`` ``[B, N]``; returns ``[B]``.

    Uses the metric's vectorised twin when it has one (see
    :func:`~sitefusion.evaluation.weighted.vectorised_counterpart`), else materialises each
    resample (images repeated by their weight) and calls ``metric_fn(y, probs)`` on it.
    """
    y = np.asarray(y)
    probs = np.asarray(probs)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != y.shape[0] or probs.shape[0] != y.shape[0]:
        raise EvaluationError(
            f"expected y [N], probs [N, C], weights [B, N] with one N; got {list(y.shape)}, "
            f"{list(probs.shape)}, {list(weights.shape)}"
        )
    batched = vectorised_counterpart(metric_fn)
    if batched is not None:
        parts = [
            np.asarray(batched(y, probs, chunk), dtype=np.float64)
            for chunk in _chunks(weights, y.shape[0])
        ]
        return np.concatenate(parts) if parts else np.empty(0)
    index = np.arange(y.shape[0])
    out = np.empty(weights.shape[0])
    for b, row in enumerate(weights.astype(np.int64)):
        take = np.repeat(index, row)
        out[b] = metric_fn(y[take], probs[take])
    return out


def _chunks(weights: np.ndarray, n: int) -> Iterator[np.ndarray]:
    rows = max(1, _MAX_CHUNK_ELEMENTS // max(1, n))
    for i in range(0, weights.shape[0], rows):
        yield weights[i : i + rows]


def resampled_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray,
    names: Sequence[str] | None = None,
    n_bins: int = 15,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Several named metrics on every resample of ``weights`` ``[B, N]``: ``{name: [B]}``.

    :func:`~sitefusion.evaluation.weighted.batched_metrics`, processed in row chunks so that
    temporaries stay small for large ``N``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    parts = [
        batched_metrics(y, probs, chunk, names, n_bins, threshold)
        for chunk in _chunks(weights, np.asarray(y).shape[0])
    ]
    keys = list(parts[0]) if parts else list(names or ())
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.empty(0) for k in keys}


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, int]:
    """Percentile interval of the finite ``values`` ``[B]``: ``(low, high, n_used)``.

    ``nan`` values (undefined resamples) are skipped; with none left the bounds are ``nan``.
    """
    if not 0.0 < alpha < 1.0:
        raise EvaluationError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"), 0)
    low, high = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(low), float(high), int(finite.size))


def group_bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """Metric of ``(y [N], probs [N, C])`` with a group-bootstrap percentile interval.

    Args:
        metric_fn: ``(y, probs) -> float``, ``nan`` where undefined; the functions of
            :mod:`~sitefusion.evaluation.metrics` and
            :class:`~sitefusion.evaluation.weighted.Metric` objects run vectorised.
        y: ``[N]`` int labels.
        probs: ``[N, C]`` probabilities.
        groups: ``[N]`` group (lesion/patient) of each image; groups are resampled.
        n_boot: resamples drawn.
        seed: seed of ``numpy.random.default_rng``.
        alpha: the interval covers ``1 - alpha``.
    """
    weights = group_bootstrap_weights(groups, n_boot, seed)
    if np.asarray(y).shape[0] == 0:
        return BootstrapResult(float("nan"), float("nan"), float("nan"), 0, weights.shape[0], alpha)
    value = float(metric_fn(np.asarray(y), np.asarray(probs)))
    with single_threaded_blas():
        resampled = resampled_values(metric_fn, y, probs, weights)
    low, high, used = percentile_ci(resampled, alpha)
    return BootstrapResult(value, low, high, used, weights.shape[0], alpha)


def paired_bootstrap_difference(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """Difference ``metric(a) - metric(b)`` of two methods on the same images, with its interval.

    Both methods are scored on the *same* group resamples, so the interval reflects the
    difference's own variability (much narrower than two separate intervals when the methods
    err on the same images). ``probs_a`` and ``probs_b`` are ``[N, C]``; other arguments as in
    :func:`group_bootstrap_ci`. Resamples where either metric is undefined are skipped.
    """
    probs_a, probs_b = np.asarray(probs_a), np.asarray(probs_b)
    if probs_a.shape != probs_b.shape:
        raise EvaluationError(
            f"probs_a and probs_b: expected the same shape [N, C], got {list(probs_a.shape)} "
            f"and {list(probs_b.shape)}"
        )
    weights = group_bootstrap_weights(groups, n_boot, seed)
    if np.asarray(y).shape[0] == 0:
        return BootstrapResult(float("nan"), float("nan"), float("nan"), 0, weights.shape[0], alpha)
    y = np.asarray(y)
    value = float(metric_fn(y, probs_a)) - float(metric_fn(y, probs_b))
    with single_threaded_blas():
        diffs = resampled_values(metric_fn, y, probs_a, weights) - resampled_values(
            metric_fn, y, probs_b, weights
        )
    low, high, used = percentile_ci(diffs, alpha)
    return BootstrapResult(value, low, high, used, weights.shape[0], alpha)
