"""Fixtures for the scoring tests: a tiny trained run, real sample files and bad inputs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from scoring_samples import SITE_MAP, CallLog

from sitefusion.config import Config
from sitefusion.workflows import train_run


@pytest.fixture(scope="session")
def scoring_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., Config],
    synthetic_2d: Path,
) -> Path:
    """A tiny 2D single-channel run (3 sites, 3 classes, 24 x 24) with a DICOM site map."""
    out = tmp_path_factory.mktemp("scoring_run") / "run"
    train_run(tiny_config(synthetic_2d, scoring={"site_map": SITE_MAP}), out)
    return out


@pytest.fixture
def call_log(tmp_path: Path) -> CallLog:
    """A :class:`CallLog` in a file of its own."""
    return CallLog(tmp_path / "calls.log")


@pytest.fixture(scope="session")
def synthetic_pngs(synthetic_2d: Path) -> list[Path]:
    """A few of the synthetic set's PNG images (one per site, then more)."""
    images = sorted((synthetic_2d.parent).rglob("*.png"))
    return images[::20][:6]


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """Path of dicom3tools' ``dciodvfy``; installs it once with apt-get if possible, else skips."""
    found = shutil.which("dciodvfy")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [apt, "install", "-y", "dicom3tools"],
                capture_output=True,
                timeout=180,
                check=False,
            )
    found = shutil.which("dciodvfy")
    if not found:
        pytest.skip(
            "dciodvfy (Debian package dicom3tools) is not installed and `apt-get install -y "
            "dicom3tools` did not provide it: the SR was not validated"
        )
    return found
