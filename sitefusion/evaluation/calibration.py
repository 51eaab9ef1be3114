"""Temperature scaling (Guo et al., 2017): one scalar ``T`` dividing the logits.

``softmax(z / T)`` keeps every prediction (the argmax) and only changes the confidence; ``T > 1``
softens over-confident outputs. Fit ``T`` on *validation* predictions, then apply it to the test
predictions: fitting on the test images would flatter the calibration metrics.

Logits and log-probabilities are interchangeable here: ``log_softmax(z)`` differs from ``z`` by a
per-row constant, which the softmax ignores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sitefusion.evaluation.errors import EvaluationError

__all__ = [
    "TEMPERATURE_BOUNDS",
    "apply_temperature",
    "fit_temperature",
    "negative_log_likelihood",
    "temperature_record",
]

#: The range :func:`fit_temperature` searches by default; a result on either end means the
#: optimum lies beyond it.
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _check(logits: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise EvaluationError(f"logits: expected shape [N, C] with C >= 2, got {list(z.shape)}")
    if not np.all(np.isfinite(z)):
        raise EvaluationError(
            "logits: non-finite value; pass logits or log(probs) with probs clipped away from 0"
        )
    if y is not None:
        y = np.asarray(y)
        if y.shape != (z.shape[0],) or (
            y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= z.shape[1])
        ):
            raise EvaluationError(
                f"y: expected {z.shape[0]} integer labels in [0, {z.shape[1]}), "
                f"got shape {list(y.shape)}"
            )
    return z


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise EvaluationError(f"temperature: expected a finite value > 0, got {temperature!r}")
    return t


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``y`` ``[N]`` under ``softmax(logits / T)``.

    ``logits`` is ``[N, C]`` (logits or log-probabilities).
    """
    z = _check(logits, y)
    t = _check_temperature(temperature)
    if z.shape[0] == 0:
        return float("nan")
    log_p = _log_softmax(z / t)
    return float(-log_p[np.arange(z.shape[0]), np.asarray(y, dtype=np.int64)].mean())


def fit_temperature(
    logits: np.ndarray,
    y: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tol: float = 1e-6,
) -> float:
    """Return the temperature ``T`` in ``bounds`` minimising the NLL of ``y`` under softmax(z / T).

    ``logits`` is ``[N, C]`` (logits or log-probabilities), ``y`` ``[N]`` int labels. The NLL is
    convex in ``1 / T``, hence unimodal in ``log T``; a golden-section search over ``log T``
    finds the minimum to relative precision ``tol``. A result on a bound means the optimum lies
    beyond it (e.g. perfectly separated training data drive ``T`` to 0).
    """
    z = _check(logits, y)
    if z.shape[0] == 0:
        raise EvaluationError("fit_temperature: no images (N = 0)")
    low, high = (_check_temperature(b) for b in bounds)
    if not low < high:
        raise EvaluationError(f"bounds: expected (low, high) with low < high, got {bounds!r}")
    labels = np.asarray(y, dtype=np.int64)

    def nll(log_t: float) -> float:
        log_p = _log_softmax(z / math.exp(log_t))
        return float(-log_p[np.arange(z.shape[0]), labels].mean())

    a, b = math.log(low), math.log(high)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = nll(d)
    # The search never evaluates the bounds themselves; keep them when they are the optimum.
    return float(min((low, math.exp((a + b) / 2.0), high), key=lambda t: nll(math.log(t))))


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Return ``softmax(log_probs / T)`` ``[N, C]`` for logits or log-probabilities ``[N, C]``."""
    z = _check(log_probs)
    return np.exp(_log_softmax(z / _check_temperature(temperature)))


def temperature_record(logits: np.ndarray, labels: np.ndarray, fitted_on: str) -> dict[str, Any]:
    """The ``calibration`` entry of a fusion's JSON: the temperature fitted on ``logits [N, C]``
    and ``labels [N]``, or 1 (no scaling) with a ``note`` when the fit runs onto a bound.

    A bound means the images' likelihood keeps improving beyond it: on a small held-out set
    that the fusion classifies without error the fit drives ``T`` to its floor and would make
    every later prediction over-confident (the demo's 16 held-out images did, and raised the
    test ECE), so no temperature is applied then.
    """
    bounds = TEMPERATURE_BOUNDS
    t = float(fit_temperature(logits, labels, bounds))
    record: dict[str, Any] = {"temperature": t, "fitted_on": fitted_on, "n": len(labels)}
    if t in bounds:
        how = "classified without error" if t == bounds[0] else "mostly misclassified"
        record["temperature"] = 1.0
        record["note"] = (
            f"on the {len(labels)} images it was fitted on ({how}) the likelihood "
            f"keeps improving up to the bound T = {t:g}, so no fitted value carries to new images"
        )
    return record
