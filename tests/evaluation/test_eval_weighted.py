"""The vectorised bootstrap metrics equal the scikit-learn-based reference functions."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.weighted import (
    batched_binary_metrics,
    batched_metrics,
    get_metric,
    metric_names,
)


def _case(rng: np.random.Generator, n: int, c: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    if ties:  # coarse probabilities: many exactly equal scores
        logits = np.round(logits)
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_batched_equals_reference_on_every_weighting(n_classes: int, ties: bool) -> None:
    rng = np.random.default_rng(n_classes + 10 * ties)
    y, p = _case(rng, 60, n_classes, ties)
    weights = rng.integers(0, 3, size=(12, 60)).astype(float)
    weights[0] = 1.0
    weights[1, y == 0] = 0.0  # a weighting without class 0
    out = batched_metrics(y, p, weights, [*metric_names(n_classes), "per_class_auc"], n_bins=7)
    for b, w in enumerate(weights):
        expect = {
            "balanced_accuracy": m.balanced_accuracy(y, p, w),
            "macro_auc": m.macro_auc(y, p, w),
            "accuracy": m.accuracy(y, p, w),
            "ece": m.expected_calibration_error(y, p, 7, w),
            "brier": m.brier_score(y, p, w),
        }
        if n_classes == 2:
            expect.update(m.binary_metrics(y, p[:, 1], sample_weight=w))
        for name, value in expect.items():
            np.testing.assert_allclose(out[name][b], value, rtol=1e-10, err_msg=name)
        pca = m.per_class_auc(y, p, w)
        got = out["per_class_auc"][b]
        np.testing.assert_allclose(
            got, [np.nan if pca[k] is None else pca[k] for k in range(n_classes)], rtol=1e-10
        )


def test_batched_binary_threshold() -> None:
    rng = np.random.default_rng(5)
    y, p = _case(rng, 40, 2, False)
    w = np.ones((1, 40))
    out = batched_binary_metrics(y, p, w, threshold=0.8)
    ref = m.binary_metrics(y, p[:, 1], threshold=0.8)
    assert out["sensitivity"][0] == pytest.approx(ref["sensitivity"])
    assert out["specificity"][0] == pytest.approx(ref["specificity"])


def test_metric_object_calls_reference_and_has_twin() -> None:
    rng = np.random.default_rng(1)
    y, p = _case(rng, 30, 3, False)
    ece = get_metric("ece", n_bins=5)
    assert ece(y, p) == pytest.approx(m.expected_calibration_error(y, p, 5))
    assert ece.batched(y, p, np.ones((2, 30)))[1] == pytest.approx(ece(y, p))
