"""Temperature scaling fixes over-confident logits."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from sitefusion.evaluation.errors import EvaluationError
from sitefusion.evaluation.metrics import expected_calibration_error


def _overconfident(n: int, seed: int, factor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports factor * z (over-confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    return factor * z, y


def test_fit_recovers_the_overconfidence_factor() -> None:
    logits, y = _overconfident(4000, 0, factor=3.0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.15)


def test_scaling_lowers_nll_and_ece_on_held_out_data() -> None:
    val_logits, val_y = _overconfident(3000, 1)
    test_logits, test_y = _overconfident(3000, 2)
    t = fit_temperature(val_logits, val_y)
    assert t > 1.5
    assert negative_log_likelihood(test_logits, test_y, t) < negative_log_likelihood(
        test_logits, test_y
    )
    before = apply_temperature(test_logits, 1.0)
    after = apply_temperature(test_logits, t)
    assert expected_calibration_error(test_y, after) < 0.5 * expected_calibration_error(
        test_y, before
    )
    # predictions unchanged, rows are probabilities
    np.testing.assert_array_equal(before.argmax(1), after.argmax(1))
    np.testing.assert_allclose(after.sum(axis=1), 1.0)


def test_log_probs_and_logits_give_the_same_temperature() -> None:
    logits, y = _overconfident(500, 3)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert fit_temperature(log_p, y) == pytest.approx(fit_temperature(logits, y), rel=1e-4)


def test_underconfident_logits_get_t_below_one() -> None:
    logits, y = _overconfident(3000, 4, factor=0.4)
    assert fit_temperature(logits, y) < 0.6


def test_invalid_inputs() -> None:
    with pytest.raises(EvaluationError, match="temperature"):
        apply_temperature(np.zeros((2, 3)), 0.0)
    with pytest.raises(EvaluationError, match="non-finite"):
        fit_temperature(np.array([[0.0, -np.inf]]), np.array([0]))
    with pytest.raises(EvaluationError, match="labels"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 5]))
