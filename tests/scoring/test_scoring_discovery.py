"""Discovery: folders walked, DICOM grouped per instance (2D) or series (3D), stable keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from scoring_samples import PATIENT_ID, PATIENT_NAME, pydicom_path, tagged_dicom

from sitefusion.scoring import discover_items, walk_inputs


def _series(folder: Path, n: int) -> list[Path]:
    series_uid = pydicom.uid.generate_uid()
    files = []
    for i in range(n):
        ds = pydicom.dcmread(pydicom_path("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.InstanceNumber = i + 1
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"slice_{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def test_walk_skips_hidden_files_the_output_folder_and_img_halves(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores.csv").write_text("x")
    (tmp_path / "pair.hdr").write_bytes(b"x")
    (tmp_path / "pair.img").write_bytes(b"x")
    found = walk_inputs([tmp_path, tmp_path / "a.png", tmp_path / "missing.dcm"], tmp_path / "out")
    assert [p.name for p in found] == ["a.png", "pair.hdr", "missing.dcm"]


def test_2d_runs_score_instances_and_3d_runs_score_series(tmp_path: Path) -> None:
    files = _series(tmp_path / "series", 3)
    (tmp_path / "junk.txt").write_text("hello")
    flat = discover_items([tmp_path], volumetric=False)
    kinds = sorted((it.kind, Path(it.input).name) for it in flat.items)
    assert kinds == [
        ("dicom-instance", "slice_00.dcm"),
        ("dicom-instance", "slice_01.dcm"),
        ("dicom-instance", "slice_02.dcm"),
        ("unreadable", "junk.txt"),
    ]
    vol = discover_items([tmp_path], volumetric=True)
    series = [it for it in vol.items if it.kind == "dicom-series"]
    assert len(series) == 1
    assert series[0].files == tuple(files)
    assert series[0].input == str(tmp_path / "series")
    assert len(series[0].sop_uids) == 3
    # The series hash is order-free and changes with any file.
    again = discover_items([*reversed(files)], volumetric=True).items[0]
    assert again.content_sha256 == series[0].content_sha256
    assert again.item_id == series[0].item_id
    files[1].write_bytes(files[1].read_bytes() + b"\0\0")
    changed = discover_items([tmp_path / "series"], volumetric=True).items[0]
    assert changed.content_sha256 != series[0].content_sha256


def test_patient_identifiers_are_collected_per_item_but_never_shown(tmp_path: Path) -> None:
    tagged_dicom(tmp_path / "p.dcm")
    shutil.copy(pydicom_path("MR_small.dcm"), tmp_path / "other.dcm")
    items = {Path(it.input).name: it for it in discover_items([tmp_path], volumetric=False).items}
    assert PATIENT_ID in items["p.dcm"].identifiers
    assert "Quuxington" in items["p.dcm"].identifiers
    assert PATIENT_ID not in items["other.dcm"].identifiers
    assert PATIENT_NAME not in repr(items["p.dcm"]) and PATIENT_ID not in repr(items["p.dcm"])


def test_unreadable_files_become_items_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "zero.dcm").write_bytes(b"")
    items = discover_items([tmp_path, tmp_path / "nope.png"], volumetric=False).items
    reasons = {Path(it.input).name: it.error for it in items}
    assert reasons["zero.dcm"] is not None and "empty file (0 bytes)" in reasons["zero.dcm"]
    assert reasons["nope.png"] is not None and "does not exist" in reasons["nope.png"]
