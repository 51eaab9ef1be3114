"""Images whose headers claim gigabytes are refused before decoding (issue 23, defect 10)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from sitefusion.errors import ImageReadError
from sitefusion.io import read_image
from sitefusion.io.files import MAX_ELEMENTS


def _peak_while_refused(path: Path, **kwargs: int) -> tuple[str, int]:
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as err:
            read_image(path, **kwargs)
        return str(err.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_small_deflated_dicom_that_claims_billions_of_pixels(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 200_000
    message, peak = _peak_while_refused(path)
    assert "describes a 100x65535x65535x1 image" in message and f"{MAX_ELEMENTS:,}" in message
    assert str(path) in message
    assert peak < 50e6  # the header was read, the pixels never decoded


def test_a_nifti_header_that_claims_a_trillion_voxels(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((10_000, 10_000, 10_000))
    header.set_data_dtype(np.uint8)
    path = tmp_path / "bomb.nii"
    with path.open("wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * 1024)  # a few voxels; the header promises 10^12
    message, peak = _peak_while_refused(path)
    assert "describes a 10000x10000x10000 image" in message
    assert peak < 50e6


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), path)
    assert read_image(path).array.shape == (1, 16, 16, 16)
    with pytest.raises(ImageReadError, match="more than the limit of 1,000"):
        read_image(path, max_elements=1_000)
