"""Names and a study shared by the DICOM node tests (a module of its own: test modules cannot
import another folder's conftest unambiguously)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

NODE_AE = "SFNODE"
MODALITY_AE = "MODALITY"
PATIENT_NAME = "Doe^Jane^Node"
PATIENT_ID = "NODE-PID-4711"


def make_study(folder: Path, per_series: int = 3) -> dict[str, list[Path]]:
    """One study of two series (a CT and an MR, from pydicom's CT_small and MR_small), each of
    ``per_series`` instances with fresh UIDs, under a known patient name and id.

    Returns ``{series_uid: [files]}``.
    """
    study = generate_uid()
    series: dict[str, list[Path]] = {}
    for sample in ("CT_small.dcm", "MR_small.dcm"):
        uid = generate_uid()
        paths: list[Path] = []
        for k in range(per_series):
            ds = pydicom.dcmread(get_testdata_file(sample))
            ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = k + 1
            path = folder / uid / f"{k:02d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        series[uid] = paths
    return series
