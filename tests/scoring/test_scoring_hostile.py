"""Hostile and careless inputs to a scoring batch (issue 23): nothing hangs, nothing crashes the
batch, every entry met gets its row saying what it is."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from sitefusion.scoring import score_inputs


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def _error(rows: list[dict[str, Any]], name: str) -> str:
    (row,) = [r for r in rows if r["input"].endswith(name)]
    assert row["status"] == "error", row
    return str(row["error"])


def test_a_fifo_and_a_device_get_rows_and_are_never_opened(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: discovery hashed the FIFO and the batch hung forever (defect 1)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_pngs[0], inputs / "ok.png")
    os.mkfifo(inputs / "pipe.png")
    summary = score_inputs(scoring_run, [inputs, "/dev/zero"], tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert summary.items == 3 and summary.ok == 1
    assert "not a regular file (a FIFO (named pipe))" in _error(rows, "pipe.png")
    assert "not a regular file (a character device)" in _error(rows, "zero")


def test_unlistable_folders_and_broken_links_get_rows_and_the_batch_goes_on(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a folder without permission crashed the batch; dangling links and link loops
    got no row (defect 2). Tests run as root, where permission bits do not stop a listing, so
    the refusal is simulated at os.scandir."""
    inputs = tmp_path / "in"
    (inputs / "locked").mkdir(parents=True)
    shutil.copy(synthetic_pngs[0], inputs / "ok.png")
    (inputs / "dangling.png").symlink_to(tmp_path / "gone.png")
    (inputs / "loop.png").symlink_to(inputs / "loop.png")
    (inputs / "again").symlink_to(inputs)  # a folder link back up: walked once, not forever
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    summary = score_inputs(scoring_run, [inputs], tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert summary.ok == 1
    assert "folder cannot be listed (Permission denied)" in _error(rows, "locked")
    assert "broken symbolic link" in _error(rows, "dangling.png")
    assert "symbolic link loop" in _error(rows, "loop.png")
    assert len(rows) == summary.items == 4


def test_a_file_name_that_is_not_utf8_is_scored(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: UnicodeEncodeError in item_id killed the batch (defect 3)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    shutil.copy(synthetic_pngs[0], inputs / name)
    summary = score_inputs(scoring_run, [inputs], tmp_path / "out")
    (row,) = _rows(tmp_path / "out")
    assert summary.ok == 1 and row["status"] == "ok"
    assert row["input"].endswith("caf\\xe9.png")  # the undecodable byte, written reversibly


def test_an_output_folder_reached_through_a_link_inside_the_inputs_is_not_scored(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: --out compared absolute, not resolved, paths; the second batch scored the first
    batch's own outputs (defect 5)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_pngs[0], inputs / "a.png")
    real_out = tmp_path / "elsewhere"
    real_out.mkdir()
    (inputs / "scores").symlink_to(real_out, target_is_directory=True)
    first = score_inputs(scoring_run, [inputs], inputs / "scores", explain=True)
    second = score_inputs(scoring_run, [inputs], real_out, explain=True)
    assert first.items == second.items == 1


def test_header_values_never_become_spreadsheet_formulas_or_invalid_sr_references(
    scoring_run: Path, tmp_path: Path
) -> None:
    """Before: a UID such as =HYPERLINK(...) reached scores.csv as a live formula and the SR as
    an illegal UID (defect 8)."""
    import csv

    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = '=HYPERLINK("http://x","y")'
    ds.SeriesInstanceUID = "+cmd|' /C calc'!A0"
    inputs = tmp_path / "in"
    inputs.mkdir()
    ds.save_as(inputs / "ct.dcm")
    score_inputs(scoring_run, [inputs], tmp_path / "out")
    with (tmp_path / "out" / "scores.csv").open(newline="") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    (row,) = [r for r in _rows(tmp_path / "out") if r["input"].endswith("ct.dcm")]
    assert row["status"] == "ok" and row["study_uid"] is None and row["series_uid"] is None
    assert not (tmp_path / "out" / "sr").exists()  # nothing to reference validly


def test_every_text_cell_a_spreadsheet_would_evaluate_is_neutralised() -> None:
    from sitefusion.scoring.outputs import rows_to_csv

    rows = [{"a": "=1+1", "b": "@SUM(A1)", "c": -0.5, "d": "+x", "e": "-y", "f": "\tz", "g": "ok"}]
    text = rows_to_csv(rows, list(rows[0]))
    assert text.splitlines()[1] == "'=1+1,'@SUM(A1),-0.5,'+x,'-y,'\tz,ok"


@pytest.mark.parametrize("case", ["is a file", "under a file", "read-only", "disk full"])
def test_a_bad_output_folder_is_one_line_before_any_work(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """Before: tracebacks, after loading the run (score) or predicting everything (evaluate)
    (defect 4). Read-only and full disks are simulated at os.write / tempfile (tests run as
    root, and a full disk cannot be made here)."""
    import errno
    import tempfile

    from typer.testing import CliRunner

    import sitefusion.atomic as atomic
    from sitefusion.cli.main import app

    out = tmp_path / "out"
    if case == "is a file":
        out.write_text("x")
    elif case == "under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "read-only":

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(atomic.os, "write", full)
    loaded: list[object] = []
    import sitefusion.scoring.batch as batch
    import sitefusion.workflows.evaluate as evaluate

    for module in (batch, evaluate):
        monkeypatch.setattr(module, "LoadedRun", lambda *a, **k: loaded.append(a))
    runner = CliRunner()
    for args in (
        ["score", str(scoring_run), str(synthetic_pngs[0]), "--out", str(out)],
        ["evaluate", str(scoring_run), "--out", str(out)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        message = " ".join(result.output.split())
        assert message.startswith(f"error: {out}"), message
        assert {
            "is a file": "is a file",
            "under a file": "lies under",
            "read-only": "Read-only",
            "disk full": "No space left",
        }[case] in message
        assert "Traceback" not in result.output
    assert loaded == []  # nothing heavy was started


def test_the_same_scores_give_the_same_sr_bytes_whenever_they_are_written(
    scoring_run: Path, tmp_path: Path
) -> None:
    """Before: InstanceCreationTime, ContentTime and ContributionDateTime came from the clock,
    so an interrupted batch wrote another document under the same SOP Instance UID (defect 7)."""
    import time

    from pydicom.data import get_testdata_file

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), inputs / "ct.dcm")
    score_inputs(scoring_run, [inputs], tmp_path / "a")
    time.sleep(1.1)  # the clock moves on by more than the resolution of a DICOM TM
    score_inputs(scoring_run, [inputs], tmp_path / "b")
    (first,) = sorted((tmp_path / "a" / "sr").glob("*.dcm"))
    (second,) = sorted((tmp_path / "b" / "sr").glob("*.dcm"))
    assert first.read_bytes() == second.read_bytes()


def test_the_files_hold_exactly_the_batch_just_scored(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: rows of another batch, or of inputs that had disappeared, stayed in scores.csv
    while the summary counted only the current batch (defect 6)."""
    import csv

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, images in ((first, synthetic_pngs[:3]), (second, synthetic_pngs[3:5])):
        folder.mkdir()
        for image in images:
            shutil.copy(image, folder / image.name)
    out = tmp_path / "out"
    score_inputs(scoring_run, [first], out)
    (first / synthetic_pngs[0].name).unlink()  # an input disappears
    again = score_inputs(scoring_run, [first], out)
    other = score_inputs(scoring_run, [second], out)  # the folder reused for other inputs
    with (out / "scores.csv").open(newline="") as fh:
        listed = [row["input"] for row in csv.DictReader(fh)]
    assert again.items == 2 and other.items == 2
    assert sorted(Path(p).name for p in listed) == sorted(p.name for p in synthetic_pngs[3:5])
    assert len(_rows(out)) == other.items


def test_dates_of_birth_never_reach_the_outputs(scoring_run: Path, tmp_path: Path) -> None:
    """Before: a folder named after the PatientBirthDate and a file NAME_1961-07-04.dcm kept
    the date in scores, file names and Grad-CAM file names (defect 11)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientBirthDate = "19610704"
    folder = tmp_path / "in" / "born_04.07.1961"
    folder.mkdir(parents=True)
    ds.save_as(folder / "SCAN_1961-07-04.dcm")
    out = tmp_path / "out"
    score_inputs(scoring_run, [tmp_path / "in"], out, explain=True)
    (row,) = _rows(out)
    assert row["status"] == "ok" and "[redacted]" in row["input"]
    leaked = ("19610704", "1961-07-04", "04.07.1961")
    for path in out.rglob("*"):
        assert not any(date in path.name for date in leaked), path.name
        if path.is_file() and path.suffix in (".csv", ".jsonl"):
            text = path.read_text()
            assert not any(date in text for date in leaked), path.name


def test_birth_date_spellings_cover_the_usual_exports() -> None:
    from types import SimpleNamespace

    from sitefusion.scoring.redaction import birth_date_spellings

    found = birth_date_spellings(SimpleNamespace(get=lambda k: "19610704"))
    assert {"19610704", "1961-07-04", "04.07.1961", "07/04/1961", "1961_07_04"} <= found
    assert birth_date_spellings(SimpleNamespace(get=lambda k: None)) == set()


def test_images_the_normalizer_cannot_represent_are_flagged_with_a_reason(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    """Before: a blank image, or intensities far outside the fitted range, became one constant
    image after normalization and got a confident prediction with ood_flag false (defect 9)."""
    import nibabel as nib
    import numpy as np

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_pngs[0], inputs / "real.png")
    affine = np.eye(4)
    shapes = (24, 24)
    blank = np.zeros(shapes, np.float32)
    far = np.random.default_rng(0).uniform(50_000, 60_000, shapes).astype(np.float32)
    nib.save(nib.Nifti1Image(blank, affine), inputs / "blank.nii.gz")
    nib.save(nib.Nifti1Image(far, affine), inputs / "ct_range.nii.gz")
    score_inputs(scoring_run, [inputs], tmp_path / "out")
    rows = {Path(r["input"]).name: r for r in _rows(tmp_path / "out")}
    assert rows["blank.nii.gz"]["ood_flag"] is True
    assert "constant image" in rows["blank.nii.gz"]["ood_reason"]
    assert rows["ct_range.nii.gz"]["ood_flag"] is True
    assert "outside" in rows["ct_range.nii.gz"]["ood_reason"]
    assert (
        rows["real.png"]["ood_reason"] is None
        or "feature distance" in rows["real.png"]["ood_reason"]
    )
