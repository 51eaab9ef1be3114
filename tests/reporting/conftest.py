"""Fixtures of the reporting tests: a small evaluated prediction set, and headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
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


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium; tries ``apt-get install chromium`` once as root."""
    found = _find_chromium()
    apt = shutil.which("apt-get")
    if found is None and apt is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [apt, "install", "-y", "--no-install-recommends", "chromium"],
                capture_output=True,
                timeout=300,
                check=False,
                env=env,
            )
        found = _find_chromium()
    if found is None:
        pytest.skip(
            "headless Chromium is not installed (/usr/bin/chromium missing; `apt-get install "
            "chromium` unavailable or failed): the browser rendering check of report.html was "
            "NOT run"
        )
    return found
