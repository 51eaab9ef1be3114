"""Sample inputs shared by the scoring tests (imported by the tests and by conftest.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pydicom.data
import pytest

PATIENT_NAME = "Quuxington^Zebediah"
PATIENT_ID = "PID-93XJQ7Z"
INSTITUTION = "Quux General Hospital"
SITE_MAP = {
    "InstitutionName": {INSTITUTION: "site_b"},
    "Manufacturer ManufacturerModelName": {"ACME Scanner9000": "site_c"},
}
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"


def pydicom_path(name: str) -> Path:
    """A pydicom test file (skips when it is not available offline)."""
    found = pydicom.data.get_testdata_file(name, download=False)
    if not found:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return Path(str(found))


def tagged_dicom(
    path: Path,
    *,
    institution: str | None = INSTITUTION,
    manufacturer: tuple[str, str] | None = None,
    source: str = "CT_small.dcm",
) -> Path:
    """A copy of a pydicom sample with distinctive patient identifiers and equipment tags."""
    ds = pydicom.dcmread(pydicom_path(source))
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.OtherPatientIDs = PATIENT_ID + "-OLD"
    if institution is None:
        if "InstitutionName" in ds:
            del ds.InstitutionName
    else:
        ds.InstitutionName = institution
    if manufacturer is not None:
        ds.Manufacturer, ds.ManufacturerModelName = manufacturer
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_bad_inputs(folder: Path, reference_png: Path) -> dict[str, Path]:
    """Inputs every scorer must turn into error rows, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    jpeg = folder / "truncated.jpg"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    nan = folder / "nan.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.full((8, 8, 1), np.nan, np.float32), np.eye(4)), nan)
    text = folder / "notes.dcm"
    text.write_text("this is not a DICOM file\n")
    four_d = folder / "four_d.nii.gz"
    nibabel.save(
        nibabel.Nifti1Image(np.ones((8, 8, 4, 3), np.float32), np.eye(4)),
        four_d,
    )
    rgb = folder / "colour.png"
    Image.open(reference_png).convert("RGB").save(rgb)
    return {
        "truncated.jpg": jpeg,
        "empty.png": empty,
        "nan.nii.gz": nan,
        "notes.dcm": text,
        "four_d.nii.gz": four_d,
        "colour.png": rgb,
    }


class CallLog:
    """Calls recorded from any process, one line each in a file: scoring's readers are forked
    processes, whose appends to a list in the test would never reach it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:  # O_APPEND: whole lines, any process
            fh.write(text + "\n")

    def lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
