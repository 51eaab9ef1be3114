"""read_image: dispatch, generated bad inputs, and a sweep over every real sample file."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pydicom.data
import pytest
from PIL import Image

from sitefusion.errors import ImageReadError
from sitefusion.io import detect_format, read_image

Files = Callable[[str], Path]

PYDICOM_FILES = sorted(
    Path(p) for p in pydicom.data.get_testdata_files("**/*") if Path(p).is_file()
)
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
NIBABEL_FILES = sorted(p for p in NIBABEL_DATA.iterdir() if p.is_file())


def _id(path: Path) -> str:
    return (
        path.name
        if path.parent.name in ("test_files", "data")
        else f"{path.parent.name}/{path.name}"
    )


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken samples
@pytest.mark.parametrize("path", PYDICOM_FILES + NIBABEL_FILES, ids=_id)
def test_every_sample_reads_or_raises_image_read_error(path: Path) -> None:
    try:
        image = read_image(path)
    except ImageReadError as err:
        assert err.path == str(path)
        assert err.cause and "\n" not in err.cause
        return
    assert image.array.dtype == np.float32
    assert image.array.ndim in (3, 4)
    assert image.channels >= 1
    assert np.isfinite(image.array).all()
    assert image.metadata["path"] == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file does not exist"):
        read_image(tmp_path / "absent.png")


@pytest.mark.parametrize("name", ["empty.dcm", "empty.png", "empty.nii", "empty"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty file \(0 bytes\)"):
        read_image(path)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 50)
    with pytest.raises(ImageReadError, match="not an image") as info:
        read_image(path)
    assert isinstance(info.value, OSError)  # ImageReadError is an OSError for callers


def test_text_file_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_text("not a DICOM header at all\n" * 50)
    with pytest.raises(ImageReadError, match="not an image: not a DICOM file"):
        read_image(path)


def test_format_is_recognised_by_content_not_name(pydicom_file: Files, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, "PNG")
    png_named_dcm = tmp_path / "really_a_png.dcm"
    png_named_dcm.write_bytes(buffer.getvalue())
    dicom_no_suffix = tmp_path / "IM0001"
    dicom_no_suffix.write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    assert detect_format(png_named_dcm) == "raster"
    assert read_image(png_named_dcm).metadata["format"] == "png"
    assert detect_format(dicom_no_suffix) == "dicom"
    assert read_image(dicom_no_suffix).array.shape == (1, 128, 128)


def test_nifti_without_suffix_is_found_by_magic(nibabel_file: Files, tmp_path: Path) -> None:
    renamed = tmp_path / "volume.bin"
    renamed.write_bytes(nibabel_file("example4d.nii.gz").read_bytes())
    assert detect_format(renamed) == "nifti"
    assert read_image(renamed).array.shape == (2, 24, 96, 128)


def test_unexpected_library_errors_are_wrapped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sitefusion.io.dispatch as dispatch

    def broken(path: Path, **_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(dispatch, "read_raster", broken)
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    with pytest.raises(ImageReadError, match="unexpected error while reading: KeyError") as info:
        read_image(path)
    assert isinstance(info.value.__cause__, KeyError)


def test_error_pickles(tmp_path: Path) -> None:
    import pickle

    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "absent.png")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.cause) == (info.value.path, "file does not exist")
