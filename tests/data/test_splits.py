from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from sitefusion.config import DataConfig, SplitConfig
from sitefusion.data import LeakageError, Manifest, Record, check_leakage, make_splits


def manifest(n_groups: int = 200, per_group: int = 3, sites: int = 3, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    records: list[Record] = []
    for g in range(n_groups):
        site = f"s{g % sites}"
        label = "rare" if rng.random() < 0.15 else "common"
        for k in range(rng.integers(1, per_group + 1)):
            records.append(
                Record(f"g{g}_{k}", Path(f"x{g}_{k}.png"), label, site, f"g{g}", len(records) + 2)
            )
    # A group photographed at two sites (as in HAM10000).
    records.append(
        Record("g0_other", Path("y.png"), records[0].label, "s1", "g0", len(records) + 2)
    )
    return Manifest(
        Path("m.csv"), tuple(records), ("common", "rare"), tuple(f"s{i}" for i in range(sites))
    )


def test_every_group_in_one_split_even_across_sites() -> None:
    m = manifest()
    a = make_splits(m, SplitConfig())
    splits_of = defaultdict(set)
    for r in m.records:
        splits_of[r.group].add(a[r.id])
    assert all(len(s) == 1 for s in splits_of.values())
    assert a["g0_0"] == a["g0_other"]


def test_fractions_per_site_and_stratified() -> None:
    m = manifest(n_groups=600)
    a = make_splits(m, SplitConfig(train=0.6, fusion=0.2, test=0.2, val_fraction=0.15))
    for site in m.sites:
        ids = [r for r in m.records if r.site == site]
        share = {
            s: np.mean([a[r.id] == s for r in ids]) for s in ("train", "val", "fusion", "test")
        }
        assert 0.14 < share["test"] < 0.26 and 0.14 < share["fusion"] < 0.26
        assert share["val"] > 0.03 and share["train"] > 0.4
        rare = {
            s: np.mean([r.label == "rare" for r in ids if a[r.id] == s]) for s in ("train", "test")
        }
        assert abs(rare["train"] - rare["test"]) < 0.08


def test_deterministic_and_seed_dependent() -> None:
    m = manifest()
    assert make_splits(m, SplitConfig(seed=1)) == make_splits(m, SplitConfig(seed=1))
    assert make_splits(m, SplitConfig(seed=1)) != make_splits(m, SplitConfig(seed=2))


def test_leakage_check_catches_a_crossing_group() -> None:
    m = manifest()
    a = dict(make_splits(m, SplitConfig()))
    victim = "g0_other"
    a[victim] = "test" if a[victim] != "test" else "train"
    with pytest.raises(LeakageError, match="1 group\\(s\\) cross splits"):
        check_leakage(m, a)


def test_leakage_check_catches_unassigned() -> None:
    m = manifest()
    a = dict(make_splits(m, SplitConfig()))
    del a["g3_0"]
    with pytest.raises(LeakageError, match="no split"):
        check_leakage(m, a)


def test_on_generated_manifest(synthetic_2d: Path) -> None:
    from sitefusion.data import load_manifest

    cfg = DataConfig(image="image", label="label", site="site", group="group", id="image_id")
    m = load_manifest(synthetic_2d, cfg)
    a = make_splits(m, SplitConfig())
    check_leakage(m, a)
    for site in m.sites:
        assert {a[r.id] for r in m.records if r.site == site} == {"train", "val", "fusion", "test"}


def test_splits_csv_escapes_formula_cells_and_reads_them_back(tmp_path: Path) -> None:
    """Issue 31, class 7: a manifest id such as ``=cmd|' /C calc'!A0`` was written into the run's
    splits.csv as it was, where a spreadsheet evaluates it; scores.csv already escaped it."""
    from sitefusion.data.splits import load_split_table, save_splits

    hostile = ["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", "'=quoted", "plain"]
    records = tuple(
        Record(i, Path(f"x{n}.png"), "common", "s0", f"=g{n}", n + 2) for n, i in enumerate(hostile)
    )
    m = Manifest(Path("m.csv"), records, ("common",), ("s0",))
    path = tmp_path / "splits.csv"
    save_splits(path, m, {i: "train" for i in hostile})
    cells = [c for line in path.read_text().splitlines()[1:] for c in line.split(",")]
    formula = [c for c in cells if c.lstrip('"').startswith(("=", "+", "-", "@"))]
    assert formula == [], formula
    table = load_split_table(path)
    assert sorted(table) == sorted(hostile)  # the ids round-trip exactly
    assert table["+1+1"]["group"] == "=g1"
