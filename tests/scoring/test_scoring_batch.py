"""End to end: the ``sitefusion score`` command over real sample files and bad inputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from scoring_samples import (
    NIBABEL_DATA,
    PATIENT_ID,
    PATIENT_NAME,
    pydicom_path,
    tagged_dicom,
    write_bad_inputs,
)
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.scoring import score_inputs

REAL_DICOM = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "MR_truncated.dcm", "rtdose.dcm")
REAL_NIFTI = ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "analyze.hdr")
# Every identifier the tagged DICOM carries, as it could leak.
SECRETS = (PATIENT_ID, "Quuxington", "Zebediah", PATIENT_ID + "-OLD")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, synthetic_pngs: list[Path]) -> Path:
    """A department's night: PNGs, real DICOM and NIfTI samples, a tagged DICOM inside a folder
    named after the patient ID, and broken files."""
    root = tmp_path_factory.mktemp("night")
    for i, png in enumerate(synthetic_pngs[:4]):
        shutil.copy(png, root / f"png_{i}.png")
    for name in REAL_DICOM:
        shutil.copy(pydicom_path(name), root / name)
    for name in REAL_NIFTI:
        shutil.copy(NIBABEL_DATA / name, root / name)
    tagged_dicom(root / f"patient_{PATIENT_ID}" / "tagged.dcm")
    write_bad_inputs(root / "bad", synthetic_pngs[0])
    return root


@pytest.fixture(scope="module")
def scored(scoring_run: Path, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The CLI run once with --explain; returns (out dir, result, rows by file name)."""
    out = tmp_path_factory.mktemp("scores") / "out"
    result = CliRunner().invoke(
        app, ["score", str(scoring_run), str(inputs), "--out", str(out), "--explain"]
    )
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    by_name = {Path(r["input"]).name: r for r in rows}
    return out, result, rows, by_name


def test_every_input_gets_exactly_one_row(scored: Any, inputs: Path) -> None:
    out, result, rows, by_name = scored
    assert result.exit_code == 0, result.output
    expected = {p.name for p in inputs.rglob("*") if p.is_file()}
    assert sorted(by_name) == sorted(expected)
    assert len(rows) == len(expected)
    assert "items:" in result.stdout and str(out) in result.stdout
    jsonl = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["item"] for r in jsonl] == [r["item"] for r in rows]


def test_real_samples_score_after_resizing(scored: Any) -> None:
    _, _, _, by_name = scored
    for name in ("CT_small.dcm", "MR_small.dcm", "tagged.dcm", "png_0.png", "png_3.png"):
        assert by_name[name]["status"] == "ok", by_name[name]["error"]
    for name in ("CT_small.dcm", "MR_small.dcm"):
        row = by_name[name]
        assert row["study_uid"] and row["series_uid"] and row["sop_uids"]
        assert row["sr"] == f"sr/{row['series_uid']}.dcm"


def test_probabilities_and_weights_sum_to_one(scored: Any) -> None:
    _, _, rows, _ = scored
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 7
    for row in ok:
        probs = [float(v) for k, v in row.items() if k.startswith("prob_")]
        weights = [float(v) for k, v in row.items() if k.startswith("weight_")]
        assert len(probs) == 3 and len(weights) == 3
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        classes = [k.removeprefix("prob_") for k in row if k.startswith("prob_")]
        assert row["prediction"] == classes[int(np.argmax(probs))]
        assert row["ood_flag"] in ("true", "false") and float(row["ood_score"]) >= 0


def test_sites_are_resolved_and_recorded(scored: Any) -> None:
    _, _, _, by_name = scored
    tagged = by_name["tagged.dcm"]
    assert (tagged["site"], tagged["site_source"]) == ("site_b", "tag:InstitutionName")
    assert (tagged["norm_site"], tagged["norm_policy"]) == ("site_b", "known")
    png = by_name["png_0.png"]
    assert png["site_source"] == "unseen-policy" and png["site"] == ""
    assert png["norm_policy"] == "nearest" and png["norm_site"].startswith("site_")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "truncated.jpg: "),
        ("empty.png", "empty file (0 bytes)"),
        ("nan.nii.gz", "NaN or infinite"),
        ("notes.dcm", "not a DICOM file"),
        ("four_d.nii.gz", "4D NIfTI (8x8x4x3); this run takes 2D images"),
        ("colour.png", "image has 3 channel(s); this run takes 1 (pass --convert-colour"),
        ("rtplan.dcm", "DICOM has no pixel data"),
        ("MR_truncated.dcm", "truncated"),
        ("rtdose.dcm", "multi-frame DICOM instance"),
        ("anatomical.nii", "image is 3D"),
        ("example4d.nii.gz", "4D NIfTI"),
    ],
)
def test_bad_inputs_give_one_readable_error_row(scored: Any, name: str, reason: str) -> None:
    _, _, _, by_name = scored
    row = by_name[name]
    assert row["status"] == "error"
    assert name in row["error"] and reason in row["error"]
    assert "\n" not in row["error"] and "Traceback" not in row["error"]
    assert row["prediction"] == "" and row["prob_class_0"] == ""


def test_no_patient_identifier_in_any_output_or_log(scored: Any, inputs: Path) -> None:
    out, result, _, by_name = scored
    source = pydicom.dcmread(inputs / f"patient_{PATIENT_ID}" / "tagged.dcm")
    assert (str(source.PatientName), source.PatientID) == (PATIENT_NAME, PATIENT_ID)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".dcm" for p in files) and any(p.suffix == ".png" for p in files)
    # The SRs carry the source's patient module by default: they go back to its archive.
    for path in [p for p in files if p.suffix != ".dcm"]:
        data = path.read_bytes().lower()
        for secret in SECRETS:
            assert secret.lower().encode() not in data, f"{secret} leaked into {path.name}"
    logs = (result.stdout + result.stderr).lower()
    for secret in SECRETS:
        assert secret.lower() not in logs
    assert "patient_[redacted]" in by_name["tagged.dcm"]["input"]


def test_explanations_exist_for_scored_items(scored: Any) -> None:
    out, _, rows, _ = scored
    for row in rows:
        paths = [p for p in row["explanation"].split(";") if p]
        if row["status"] != "ok":
            assert paths == []
            continue
        assert [Path(p).name.rsplit("_", 1)[1] for p in paths] == ["gradcam.png", "weights.png"]
        for p in paths:
            assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sr_references_its_sources_and_passes_dciodvfy(scored: Any, dciodvfy: str) -> None:
    out, _, _, by_name = scored
    row = by_name["tagged.dcm"]
    sr_path = out / row["sr"]
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == row["study_uid"]
    assert (str(sr.PatientName), sr.PatientID) == (PATIENT_NAME, PATIENT_ID)  # the default
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == row["series_uid"]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == row["sop_uids"]
    text = str(sr)
    assert "Predicted class" in text and "Expert weight site_b" in text
    assert "Probability of class_0" in text and "99SITEFUSION" in text
    check = subprocess.run([dciodvfy, str(sr_path)], capture_output=True, text=True, timeout=60)
    report = check.stdout + check.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report


def test_a_second_run_skips_everything(scoring_run: Path, inputs: Path, scored: Any) -> None:
    out, _, rows, _ = scored
    before = (out / "scores.csv").read_text()
    result = CliRunner().invoke(
        app, ["score", str(scoring_run), str(inputs), "--out", str(out), "--explain"]
    )
    assert result.exit_code == 0, result.output
    assert f"0 scored now, {len(rows)} already done" in result.stdout
    assert (out / "scores.csv").read_text() == before


def test_outputs_are_readable_as_the_umask_allows(scored: Any) -> None:
    out = scored[0]
    mask = os.umask(0o022)
    os.umask(mask)
    for path in out.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name


def test_an_image_the_models_refuse_fails_alone(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from sitefusion.methods import LoadedRun

    folder = tmp_path / "in"
    folder.mkdir()
    for i, png in enumerate(synthetic_pngs[:3]):
        shutil.copy(png, folder / f"img_{i}.png")
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(folder / "img_1b_black.png")
    original = LoadedRun.predict

    def picky(self: LoadedRun, images: np.ndarray, sites: Any, **kw: Any) -> Any:
        if np.any(images.reshape(len(images), -1).max(1) == 0):
            raise ValueError("degenerate image\nsecond line")
        return original(self, images, sites, **kw)

    monkeypatch.setattr(LoadedRun, "predict", picky)
    summary = score_inputs(scoring_run, [folder], tmp_path / "out")
    assert (summary.ok, summary.errors) == (3, 1)
    rows = {
        Path(r["input"]).name: r for r in csv.DictReader((tmp_path / "out" / "scores.csv").open())
    }
    assert rows["img_1b_black.png"]["error"].endswith(
        "img_1b_black.png: prediction failed: ValueError: degenerate image"
    )


def test_a_2d_image_saved_with_trailing_singleton_axes_is_scored(
    scoring_run: Path, tmp_path: Path
) -> None:
    """A 2D image written as a 24x24x1x1 NIfTI is a 2D image (issue 23, defect 12)."""
    import json

    import nibabel as nib

    image = np.random.default_rng(0).uniform(0, 255, (24, 24, 1, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "flat.nii.gz")
    summary = score_inputs(scoring_run, [tmp_path / "flat.nii.gz"], tmp_path / "out")
    (row,) = [
        json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    ]
    assert summary.ok == 1 and row["status"] == "ok", row.get("error")


def test_an_sr_for_export_has_a_blank_patient_module(scoring_run: Path, tmp_path: Path) -> None:
    """``--sr-patient blank``: no identifier in any output, the SR included."""
    tagged_dicom(tmp_path / "in" / f"patient_{PATIENT_ID}" / "tagged.dcm")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(scoring_run),
            str(tmp_path / "in"),
            "--out",
            str(out),
            "--sr-patient",
            "blank",
        ],
    )
    assert result.exit_code == 0, result.output
    (sr_path,) = (out / "sr").glob("*.dcm")
    sr = pydicom.dcmread(sr_path)
    assert str(sr.PatientName) == "" and sr.PatientID == "" and sr.PatientBirthDate == ""
    for path in [p for p in out.rglob("*") if p.is_file()]:
        data = path.read_bytes().lower()
        assert not any(secret.lower().encode() in data for secret in SECRETS), path.name
    bad = CliRunner().invoke(
        app,
        ["score", str(scoring_run), str(tmp_path / "in"), "--out", str(out), "--sr-patient", "x"],
    )
    assert bad.exit_code == 1 and "valid choices: source, blank" in bad.output
