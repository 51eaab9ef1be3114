"""Fixtures of the reporting tests: a small evaluated prediction set, and headless Chromium."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sitefusion.evaluation import (
    PredictionSet,
    evaluate_calibration,
    evaluate_loso,
    evaluate_predictions,
    simulate_predictions,
)

METHODS = [
    "fusion",
    "fusion_attention",
    "pooled",
    "local:A",
    "local:B",
    "local:C",
    "output_average",
    "stacking",
    "random_features",
]


@pytest.fixture(scope="session")
def preds() -> PredictionSet:
    """3 sites, 3 classes, 9 methods, 135 test images."""
    return simulate_predictions(
        np.random.default_rng(0), images_per_site=[60, 45, 30], methods=METHODS
    )


@pytest.fixture(scope="session")
def doc(preds: PredictionSet) -> dict[str, Any]:
    """The full metrics document of ``preds``, calibration and leave-one-site-out included."""
    out = evaluate_predictions(preds, n_boot=100, seed=0)
    out["calibration"] = evaluate_calibration(preds, 1.8, fitted_on="validation split")
    out["leave_one_site_out"] = evaluate_loso({"A": preds, "B": preds}, n_boot=50)
    return out
