"""A tiny federation: the synthetic 3-site set, each site with a manifest of its own rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sitefusion.config import Config
from sitefusion.data import split_manifest_by_site
from sitefusion.federated import SiteSetup, write_group_key


@pytest.fixture
def site_setups(synthetic_2d: Path, tmp_path: Path) -> list[SiteSetup]:
    """Each site's own manifest, the shared image root, a work folder per site and the
    consortium's group key."""
    manifests = split_manifest_by_site(synthetic_2d, tmp_path / "sites")
    key = write_group_key(tmp_path / "sites" / "group.key")
    return [
        SiteSetup(site, path, synthetic_2d.parent, tmp_path / "sites" / site / "work", key)
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
