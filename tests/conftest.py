"""Shared fixtures: small synthetic multi-site sets written to tmp_path, tiny run configs, and
headless Chromium (renders the HTML pages)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sitefusion.config import Config, config_from_dict
from sitefusion.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-site, 3-class, 2D single-channel set (manifest path)."""
    out = tmp_path_factory.mktemp("synthetic_2d")
    return generate_synthetic_dataset(
        out, sites=3, images_per_site=60, classes=3, dims=2, size=24, channels=1, seed=3
    )


@pytest.fixture(scope="session")
def synthetic_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-site, 2-class, 3D volume set (manifest path)."""
    out = tmp_path_factory.mktemp("synthetic_3d")
    return generate_synthetic_dataset(
        out, sites=2, images_per_site=30, classes=2, dims=3, size=16, channels=1, seed=4
    )


def _tiny_config(manifest: Path, **overrides: object) -> Config:
    """A run config over a synthetic manifest that trains in seconds."""
    spatial = [16, 16, 16] if "3d" in str(manifest) else [24, 24]
    data = {
        "source": "csv",
        "root": str(manifest.parent),
        "manifest": manifest.name,
        "image": "image",
        "label": "label",
        "site": "site",
        "group": "group",
        "id": "image_id",
        "spatial_size": spatial,
        "channels": 1,
    }
    raw: dict[str, object] = {
        "name": "tiny",
        "seed": 0,
        "data": data,
        "expert": {"backbone": "compact", "out_channels": 8},
        "training": {"epochs": 2, "batch_size": 16, "patience": 5, "threads": 1},
        "fusion": {"epochs": 20, "hidden": 8},
        "evaluation": {"bootstrap": 20},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value  # type: ignore[index]
        else:
            raw[section] = value
    return config_from_dict(raw, "<tiny>")


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    """Factory: ``tiny_config(manifest, training__epochs=3, fusion={...})``."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., Config],
    synthetic_2d: Path,
) -> Path:
    """A tiny finished 2D run (3 sites, 3 classes, 24 x 24) with an evaluation report in
    ``<run>/report`` (the model card and the export read both)."""
    from sitefusion.workflows import evaluate_run, train_run  # lazy: only tests that need it

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train_run(tiny_config(synthetic_2d), out)
    evaluate_run(out, out / "report", n_boot=20)
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
            "chromium` unavailable or failed): the browser rendering check of the HTML "
            "page was NOT run"
        )
    return found
