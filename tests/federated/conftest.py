"""A tiny federation: the synthetic 3-site set, each site with a manifest of its own rows."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from sitefusion.config import Config
from sitefusion.federated import SiteSetup


def split_by_site(manifest: Path, folder: Path) -> dict[str, Path]:
    """One manifest per site holding only that site's rows."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for site in sorted({r["site"] for r in rows}):
        path = folder / site / "manifest.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["site"] == site)
        out[site] = path
    return out


@pytest.fixture
def site_setups(synthetic_2d: Path, tmp_path: Path) -> list[SiteSetup]:
    """Each site's own manifest, the shared image root, and a work folder per site."""
    manifests = split_by_site(synthetic_2d, tmp_path / "sites")
    return [
        SiteSetup(site, path, synthetic_2d.parent, tmp_path / "sites" / site / "work")
        for site, path in manifests.items()
    ]


@pytest.fixture
def federated_cfg(tiny_config: Callable[..., Config], synthetic_2d: Path, tmp_path: Path) -> Config:
    """A tiny federated config whose data paths point nowhere: the coordinator needs none."""
    return tiny_config(
        synthetic_2d,
        data__root=str(tmp_path / "no-such-folder"),
        data__classes=["class_0", "class_1", "class_2"],
        fusion={"epochs": 20, "hidden": 8, "cross_fit": True},
        federated={"head_rounds": 3, "head_local_epochs": 2, "fedavg_rounds": 2, "min_sites": 2},
    )
