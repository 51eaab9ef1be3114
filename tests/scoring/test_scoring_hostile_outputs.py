"""Hostile conditions for a scoring batch's outputs and paths (issue 31, classes 2 and 6)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from scoring_samples import CallLog

import sitefusion.scoring.explain as explain_module
from sitefusion.scoring import score_inputs


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def test_explanations_lost_to_a_full_disk_name_the_file_and_are_retried(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the error said only "[Errno 28] No space left on device", and the rows were
    journaled as done, so a rerun after space was freed never wrote their Grad-CAM."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, png in enumerate(synthetic_pngs[:4]):
        shutil.copy(png, inputs / f"img_{i}.png")
    real = explain_module.atomic_write
    calls = {"n": 0}

    def full_disk(path: Any, mode: str = "w") -> Any:
        calls["n"] += 1
        if calls["n"] > 2:  # the first item's two pictures fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode)

    monkeypatch.setattr(explain_module, "atomic_write", full_disk)
    out = tmp_path / "out"
    first = score_inputs(scoring_run, [inputs], out, explain=True)
    assert first.ok == 4 and first.explained == 1
    failed = [r for r in _rows(out) if not r["explanation"]]
    assert len(failed) == 3
    for row in failed:
        assert "No space left on device" in row["error"], row
        assert str(out / "explain") in row["error"] and "_gradcam.png" in row["error"], row

    monkeypatch.setattr(explain_module, "atomic_write", real)  # space freed
    second = score_inputs(scoring_run, [inputs], out, explain=True)
    assert second.scored == 3 and second.skipped == 1
    rows = _rows(out)
    assert all(r["explanation"] and not r["error"] for r in rows), rows
    for row in rows:
        assert all((out / p).is_file() for p in row["explanation"])
    third = score_inputs(scoring_run, [inputs], out, explain=True)
    assert third.scored == 0 and third.skipped == 4

    # A picture deleted since is written again too.
    (out / rows[0]["explanation"][0]).unlink()
    fourth = score_inputs(scoring_run, [inputs], out, explain=True)
    assert fourth.scored == 1
    assert (out / rows[0]["explanation"][0]).is_file()


def test_a_full_disk_at_the_final_files_names_them_and_the_rerun_resumes(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sitefusion.scoring.outputs as outputs
    from sitefusion.errors import OutputFolderError

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, png in enumerate(synthetic_pngs[:2]):
        shutil.copy(png, inputs / f"img_{i}.png")

    real = outputs.atomic_write

    def full_disk(path: Any, mode: str = "w") -> Any:
        if Path(path).name == "scores.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode)

    monkeypatch.setattr(outputs, "atomic_write", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OutputFolderError, match=r"scores\.jsonl: cannot write: No space left"):
        score_inputs(scoring_run, [inputs], out)
    monkeypatch.undo()
    again = score_inputs(scoring_run, [inputs], out)
    assert again.skipped == 2 and again.scored == 0 and again.ok == 2


def _patient_folder(root: Path, png: Path) -> Path:
    """``DOE_JOHN_PID778899/`` holding a photo named after the patient, a text note and (last
    in path order, so read after them) the patient's DICOM."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder = root / "DOE_JOHN_PID778899"
    folder.mkdir(parents=True)
    shutil.copy(png, folder / "DOE_JOHN_photo.png")
    shutil.copy(png, folder / "photo.png")
    (folder / "notes.txt").write_text("referral letter\n")
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.PatientName, ds.PatientID = "DOE^JOHN", "PID778899"
    ds.save_as(folder / "zz_ct.dcm")
    return folder


def _leaks(out: Path) -> list[str]:
    secrets = ("doe", "john", "pid778899")
    found = [
        str(p.relative_to(out)) for p in out.rglob("*") if any(s in p.name.lower() for s in secrets)
    ]
    for name in ("scores.csv", "scores.jsonl"):
        text = (out / name).read_text().lower()
        found += [f"{name}: {s}" for s in secrets if s in text]
    return found


def test_identifiers_from_any_dicom_header_leave_every_path_of_the_batch(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: the photo and the note in the patient's folder kept the name and ID in
    scores.csv, scores.jsonl and the Grad-CAM file name (only DICOM items were redacted, each
    with its own header's identifiers)."""
    folder = _patient_folder(tmp_path / "in", synthetic_pngs[0])
    out = tmp_path / "out"
    summary = score_inputs(scoring_run, [folder], out, explain=True, batch_size=1)
    assert summary.items == 4
    rows = _rows(out)
    assert sum(r["status"] == "ok" for r in rows) == 3, rows
    assert _leaks(out) == []
    assert all("[redacted]" in r["input"] for r in rows), [r["input"] for r in rows]


def test_a_resumed_batch_redacts_rows_written_before_the_identifiers_were_known(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """The photos are scored first on their own (no DICOM header: nothing to redact yet); the
    rerun over the whole folder skips them but must not keep their names in any output."""
    folder = _patient_folder(tmp_path / "in", synthetic_pngs[0])
    out = tmp_path / "out"
    photos = [folder / "DOE_JOHN_photo.png", folder / "photo.png"]
    score_inputs(scoring_run, photos, out, explain=True)
    summary = score_inputs(scoring_run, [folder], out, explain=True)
    assert summary.skipped == 2 and summary.items == 4
    assert _leaks(out) == []
    rows = _rows(out)
    for row in rows:
        assert all((out / p).is_file() for p in row["explanation"] or [])


def test_an_sr_lost_to_a_full_disk_names_its_file_and_is_written_on_rerun(
    scoring_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    import sitefusion.scoring.sr_files as sr_files

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(str(get_testdata_file("CT_small.dcm")), inputs / "ct.dcm")
    series = str(pydicom.dcmread(inputs / "ct.dcm").SeriesInstanceUID)

    def full_disk(path: Path, sr: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sr_files, "write_series_sr", full_disk)
    out = tmp_path / "out"
    first = score_inputs(scoring_run, [inputs], out)
    assert first.sr_failed == 1
    (reason,) = first.sr_errors
    assert str(out / "sr" / f"{series}.dcm") in reason and "No space left" in reason, reason
    monkeypatch.undo()
    second = score_inputs(scoring_run, [inputs], out)
    assert second.sr_written == 1 and (out / "sr" / f"{series}.dcm").is_file()


def test_a_raster_with_the_wrong_channels_is_refused_from_its_header(
    scoring_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call_log: CallLog
) -> None:
    """Issue 31, class 1: the channel check ran after the image was decoded to float32; an
    RGB photo for a grey run is now refused from its header, its pixels never decoded."""
    from PIL import Image

    import sitefusion.io.raster as raster

    path = tmp_path / "in" / "colour.jpg"
    path.parent.mkdir()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path)
    real = raster._to_array

    def counting(image: Any, mode: str, p: Any) -> Any:
        call_log.add(str(p))
        return real(image, mode, p)

    monkeypatch.setattr(raster, "_to_array", counting)
    out = tmp_path / "out"
    score_inputs(scoring_run, [path.parent], out)
    (row,) = _rows(out)
    assert row["status"] == "error"
    assert "image has 3 channel(s); this run takes 1 (pass --convert-colour" in row["error"]
    assert call_log.lines() == []
    score_inputs(scoring_run, [path.parent], tmp_path / "out2", convert_colour=True)
    assert _rows(tmp_path / "out2")[0]["status"] == "ok" and call_log.lines() == [str(path)]


def test_a_deflated_file_in_place_of_an_sr_is_rewritten_not_inflated(
    scoring_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SR already in the output folder is read to see whether it is current; a deflated
    file put there (pydicom would inflate it whole) is rewritten without being read."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    import sitefusion.scoring.sr_files as sr_files

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(str(get_testdata_file("CT_small.dcm")), inputs / "ct.dcm")
    series = str(pydicom.dcmread(inputs / "ct.dcm").SeriesInstanceUID)
    out = tmp_path / "out"
    planted = out / "sr" / f"{series}.dcm"
    planted.parent.mkdir(parents=True)
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(planted, enforce_file_format=True)
    opened: list[str] = []
    real = sr_files.dcmread

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sr_files, "dcmread", spy)
    summary = score_inputs(scoring_run, [inputs], out)
    assert summary.sr_written == 1 and opened == []
    assert pydicom.dcmread(planted).Modality == "SR"
