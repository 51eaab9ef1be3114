"""A 3D run scores a DICOM series as one volume and writes one SR referencing every slice."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from scoring_samples import pydicom_path

from sitefusion.config import Config
from sitefusion.scoring import score_inputs
from sitefusion.workflows import train_run


@pytest.fixture(scope="module")
def volume_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., Config],
    synthetic_3d: Path,
) -> Path:
    out = tmp_path_factory.mktemp("volume_run") / "run"
    train_run(tiny_config(synthetic_3d, fusion={"epochs": 5, "hidden": 8}), out)
    return out


def _series(folder: Path, n: int) -> tuple[str, list[str]]:
    folder.mkdir(parents=True)
    series_uid = str(pydicom.uid.generate_uid())
    sops = []
    for i in reversed(range(n)):  # written out of order: the reader sorts by position
        ds = pydicom.dcmread(pydicom_path("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"im{n - i}.dcm", enforce_file_format=True)
        sops.append(str(ds.SOPInstanceUID))
    return series_uid, sops[::-1]


@pytest.fixture(scope="module")
def scored_volume(
    volume_run: Path, tmp_path_factory: pytest.TempPathFactory, synthetic_pngs: list[Path]
) -> tuple[Path, Any, str, list[str]]:
    root = tmp_path_factory.mktemp("volume_scores")
    series_uid, sops = _series(root / "in" / "study" / "series1", 6)
    (root / "in" / "flat.png").write_bytes(synthetic_pngs[0].read_bytes())
    out = root / "out"
    summary = score_inputs(volume_run, [root / "in"], out, explain=True)
    return out, summary, series_uid, sops


def test_a_series_is_one_volume_item(scored_volume: tuple[Path, Any, str, list[str]]) -> None:
    out, summary, series_uid, sops = scored_volume
    assert (summary.items, summary.ok, summary.errors) == (2, 1, 1)
    rows = {Path(r["input"]).name: r for r in csv.DictReader((out / "scores.csv").open())}
    series = rows["series1"]
    assert series["status"] == "ok" and series["series_uid"] == series_uid
    assert series["sop_uids"].split(";") == sops  # slice order
    assert "this run takes 3D images" in rows["flat.png"]["error"]
    assert all((out / p).is_file() for p in series["explanation"].split(";"))
    sr = pydicom.dcmread(out / series["sr"])
    referenced = [
        item.ReferencedSOPInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence
    ]
    assert sorted(referenced) == sorted(sops)


def test_the_series_sr_passes_dciodvfy(
    scored_volume: tuple[Path, Any, str, list[str]], dciodvfy: str
) -> None:
    out, _, series_uid, _ = scored_volume
    check = subprocess.run(
        [dciodvfy, str(out / "sr" / f"{series_uid}.dcm")], capture_output=True, text=True
    )
    report = check.stdout + check.stderr
    assert "Comprehensive3DSR" in report
    assert [ln for ln in report.splitlines() if ln.startswith("Error")] == [], report
