"""The fusion's stored temperature: fitted, or 1 with a reason when the fit runs onto a bound."""

from __future__ import annotations

import numpy as np

from sitefusion.evaluation.calibration import fit_temperature, temperature_record


def test_a_perfectly_separated_holdout_gets_no_temperature() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[labels] * 3.0  # every image right: the NLL keeps falling as T -> 0
    assert fit_temperature(logits, labels) == 0.05
    record = temperature_record(logits, labels, "6 held-out images")
    assert record["temperature"] == 1.0
    assert "classified without error" in record["note"] and "T = 0.05" in record["note"]
    assert record["n"] == 6 and record["fitted_on"] == "6 held-out images"


def test_an_ordinary_holdout_keeps_its_fitted_temperature() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    logits = np.eye(3)[labels] * 4.0 + rng.normal(scale=2.0, size=(300, 3))
    record = temperature_record(logits, labels, "300 images")
    assert record["temperature"] == fit_temperature(logits, labels)
    assert 0.05 < record["temperature"] < 20.0
    assert "note" not in record
