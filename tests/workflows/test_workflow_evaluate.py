"""Evaluation of a real (tiny) run: every method, calibration, leave-one-site-out masking."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sitefusion.config import Config
from sitefusion.data import load_manifest
from sitefusion.data.splits import load_split_table
from sitefusion.errors import ArtifactError, UnknownChoiceError
from sitefusion.evaluation.schema import validate_metrics
from sitefusion.methods import LoadedRun
from sitefusion.workflows import (
    evaluate_run,
    internal_test_manifest,
    loso_predictions,
    train_run,
    training_overlap,
)


@pytest.fixture(scope="module")
def run_dir(
    synthetic_2d: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Config]
) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    train_run(tiny_config(synthetic_2d, fusion={"epochs": 20, "hidden": 8, "cross_fit": True}), out)
    return out


def test_loso_masks_the_held_out_expert(run_dir: Path) -> None:
    loaded = LoadedRun(run_dir)
    blocks = loso_predictions(loaded, internal_test_manifest(loaded))
    assert set(blocks) == set(loaded.expert_sites)
    for e, site in enumerate(loaded.expert_sites):
        block = blocks[site]
        assert set(block.site) == {site}
        assert f"local:{site}" not in block.probs
        others = {f"local:{s}" for s in loaded.expert_sites if s != site}
        assert others <= set(block.probs)
        weights = block.attention["fusion"]
        assert np.all(weights[:, e] == 0)
        assert np.allclose(weights.sum(1), 1, atol=1e-5)


def test_evaluate_run_writes_valid_metrics_with_calibration(run_dir: Path, tmp_path: Path) -> None:
    metrics = evaluate_run(run_dir, tmp_path / "rep", n_boot=30)
    validate_metrics(metrics)
    cal = metrics["calibration"]
    assert cal["temperature"] > 0
    assert "overall" in cal["per_site"]
    expected = {
        "fusion",
        "fusion_concat",
        "fusion_attention",
        "pooled",
        "output_average",
        "weight_average",
        "stacking",
        "random_features",
    }
    assert expected <= set(metrics["methods"])
    assert {f"local:{s}" for s in metrics["sites"]} <= set(metrics["methods"])
    for block in metrics["methods"]["fusion"]["per_site"].values():
        lo, hi = block["balanced_accuracy"]["ci95"]
        assert lo <= block["balanced_accuracy"]["value"] <= hi
    assert metrics["run"]["overlap_with_training"] == {"images": 0, "ids": 0, "groups": 0}
    assert "Warning:" not in (tmp_path / "rep" / "report.md").read_text()


def test_evaluate_on_a_new_manifest_reuses_the_column_mapping(
    run_dir: Path, synthetic_2d: Path, tmp_path: Path
) -> None:
    import csv

    rows = list(csv.DictReader(synthetic_2d.open()))
    subset = tmp_path / "new.csv"
    with subset.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        # Rename one site: the run has never seen it, so the unseen-site policy applies.
        for r in rows[::3]:
            w.writerow({**r, "site": "new_hospital" if r["site"] == "site_c" else r["site"]})
    metrics = evaluate_run(
        run_dir, tmp_path / "rep2", manifest=subset, image_root=synthetic_2d.parent, n_boot=10
    )
    assert "new_hospital" in metrics["sites"]
    assert metrics["run"]["n_images"] == len(rows[::3])
    # rows[::3] mixes test images with images the run trained on: counted, and said first
    table = load_split_table(run_dir / "splits.csv")
    trained = {i for i, row in table.items() if row["split"] != "test"}
    expected = sum(r["image_id"] in trained for r in rows[::3])
    assert 0 < expected < len(rows[::3])
    assert metrics["run"]["overlap_with_training"]["images"] == expected
    summary = (tmp_path / "rep2" / "report.md").read_text()
    assert f"Warning: {expected} of the {len(rows[::3])} test images were used to train" in summary


def test_overlap_counts_a_new_image_of_a_trained_group(
    run_dir: Path, synthetic_2d: Path, tmp_path: Path
) -> None:
    """An unseen image id whose patient (site and group) the run trained on still counts."""
    import csv

    loaded = LoadedRun(run_dir)
    table = load_split_table(run_dir / "splits.csv")
    rows = list(csv.DictReader(synthetic_2d.open()))
    test_row = next(r for r in rows if table[r["image_id"]]["split"] == "test")
    trained_group = next(
        row["group"]
        for row in table.values()
        if row["split"] == "train" and row["site"] == test_row["site"]
    )
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow({**test_row, "image_id": "never_seen", "group": trained_group})
        w.writerow(test_row)  # a genuine test image: not counted
    manifest = load_manifest(path, loaded.cfg.data, image_root=synthetic_2d.parent)
    assert training_overlap(loaded, manifest) == {"images": 1, "ids": 0, "groups": 1}


def test_evaluation_never_writes_into_the_run(tmp_path: Path) -> None:
    """A synthetic run's data lives in the run directory; if it is gone, evaluation says so
    instead of generating it again inside the run."""
    import shutil

    from sitefusion.config import config_from_dict
    from sitefusion.errors import ArtifactError

    cfg = config_from_dict(
        {
            "data": {
                "source": "synthetic",
                "synthetic": {"sites": 2, "images_per_site": 30, "classes": 2, "size": 16},
                "id": "image_id",
                "spatial_size": [16, 16],
            },
            "expert": {"out_channels": 4},
            "training": {"epochs": 1, "threads": 1},
            "fusion": {"epochs": 2, "hidden": 4, "modes": ["average_attention"]},
            "baselines": {"pooled": False, "stacking": False, "weight_average": False},
        },
        "<synthetic>",
    )
    out = tmp_path / "run"
    train_run(cfg, out)
    shutil.rmtree(out / "data")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ArtifactError, match="generated data set is missing"):
        internal_test_manifest(LoadedRun(out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_the_validation_split_is_evaluated_on_request(run_dir: Path, tmp_path: Path) -> None:
    """``split="val"`` evaluates exactly the validation images, which no head trained on."""
    loaded = LoadedRun(run_dir)
    val = internal_test_manifest(loaded, "val")
    table = load_split_table(run_dir / "splits.csv")
    wanted = {rid for rid, row in table.items() if row["split"] == "val"}
    assert {r.id for r in val.records} == wanted and wanted
    metrics = evaluate_run(run_dir, tmp_path / "val", n_boot=20, split="val")
    assert metrics["run"]["test_set"] == "internal val split"
    assert metrics["run"]["n_images"] == len(wanted)
    with pytest.raises(UnknownChoiceError, match="valid choices: test, val"):
        internal_test_manifest(loaded, "fusion")


def test_loso_is_refused_when_every_expert_started_from_fedavg(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    """Every expert then learned from every site (through FedAvg): no site is held out."""
    out = tmp_path / "run"
    cfg = tiny_config(
        synthetic_2d,
        expert__start="fedavg",
        baselines__fedavg=True,
        federated__fedavg_rounds=1,
        training__epochs=1,
        fusion={"epochs": 5, "hidden": 8},
    )
    train_run(cfg, out)
    with pytest.raises(ArtifactError, match="no site is unseen"):
        evaluate_run(out, tmp_path / "rep", n_boot=10, loso=True)
    assert not (tmp_path / "rep" / "metrics.json").exists()
    expert = json.loads((out / "experts" / "site_a.json").read_text())
    assert expert["start"] == "fedavg"
