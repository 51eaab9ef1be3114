"""Curve computations behind the report's figures."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.evaluation.curves import (
    confusion,
    macro_roc_curve,
    reliability_bins,
    roc_curve_ovr,
)

Y = np.array([0, 0, 1, 1, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.1, 0.8],
        [0.2, 0.2, 0.6],
    ]
)


def test_confusion_hand_computed() -> None:
    # predictions 0, 1, 1, 2, 2
    expected = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(confusion(Y, P), expected)
    assert confusion(Y, P, 4).shape == (4, 4)


def test_reliability_bins_hand_computed() -> None:
    bins = reliability_bins(Y, P, n_bins=4)
    np.testing.assert_array_equal(bins.count, [0, 1, 3, 1])
    np.testing.assert_allclose(bins.confidence[1:], [0.5, 1.9 / 3, 0.8])
    np.testing.assert_allclose(bins.accuracy[1:], [1.0, 2 / 3, 0.0])
    assert np.isnan(bins.accuracy[0])
    assert bins.ece == pytest.approx(0.28)


def test_roc_curves() -> None:
    c0 = roc_curve_ovr(Y, P, 0)
    assert c0 is not None and c0.auc == pytest.approx(1.0)
    assert c0.fpr[0] == 0.0 and c0.tpr[-1] == 1.0
    macro = macro_roc_curve(Y, P)
    assert macro is not None and macro.auc == pytest.approx(25 / 36)
    assert np.all(np.diff(macro.tpr) >= 0)
    assert macro_roc_curve(np.zeros(3, dtype=int), P[:3]) is None
    binary = macro_roc_curve(np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    assert binary is not None and binary.auc == pytest.approx(1.0)
