"""read_dicom on pydicom's real sample files, and on variants of them built in tmp_path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_modality_lut

from sitefusion.errors import ImageReadError
from sitefusion.io import read_dicom, read_image

Files = Callable[[str], Path]


def test_ct_is_rescaled_to_hounsfield_units(pydicom_file: Files) -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_dicom(path)
    assert image.array.shape == (1, 128, 128)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], apply_modality_lut(ds.pixel_array, ds))
    assert image.array.min() < -800  # air in HU, impossible before the -1024 intercept
    assert image.metadata["spacing"] == pytest.approx([0.661468, 0.661468])
    assert image.metadata["modality"] == "CT"
    assert image.metadata["format"] == "dicom"
    assert image.metadata["SOPInstanceUIDs"] == [ds.SOPInstanceUID]
    assert image.metadata["num_frames"] == 1


def test_metadata_is_json_safe_and_free_of_patient_identifiers(pydicom_file: Files) -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) and str(ds.PatientID)  # the sample does identify a patient
    image = read_image(path)
    text = json.dumps(image.metadata)
    for identifier in (str(ds.PatientName), str(ds.PatientID), "CompressedSamples"):
        assert identifier not in text
    assert not any(key.lower().startswith("patient") for key in image.metadata)
    assert image.metadata["InstitutionName"] == str(ds.InstitutionName)


def test_lossless_encodings_decode_to_the_same_pixels(pydicom_file: Files) -> None:
    reference = read_dicom(pydicom_file("MR_small.dcm")).array
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
    ):
        np.testing.assert_array_equal(read_dicom(pydicom_file(name)).array, reference, name)


def test_rgb_is_channel_first(pydicom_file: Files) -> None:
    path = pydicom_file("SC_rgb_rle.dcm")
    image = read_dicom(path)
    expected = pydicom.dcmread(path).pixel_array.transpose(2, 0, 1)
    assert image.array.shape == (3, 100, 100)
    np.testing.assert_array_equal(image.array, expected)


def test_ybr_is_converted_to_rgb(pydicom_file: Files) -> None:
    rgb = read_dicom(pydicom_file("SC_rgb_rle.dcm")).array
    ybr = read_dicom(pydicom_file("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr.metadata["photometric_interpretation"] == "YBR_FULL_422"
    assert ybr.array.shape == (3, 100, 100)
    assert np.abs(ybr.array - rgb).mean() < 2  # raw Y/Cb/Cr would differ by ~100


def test_palette_colour_is_expanded_to_rgb(pydicom_file: Files) -> None:
    image = read_dicom(pydicom_file("examples_palette.dcm"))
    assert image.array.shape == (3, 350, 800)
    assert not np.array_equal(image.array[0], image.array[1])


def test_multi_frame_grey_is_a_volume(pydicom_file: Files) -> None:
    image = read_dicom(pydicom_file("rtdose.dcm"))
    assert image.array.shape == (1, 15, 10, 10)
    assert image.spatial_dims == 3
    assert image.metadata["num_frames"] == 15
    assert image.metadata["spacing"] == pytest.approx([5.0, 10.0, 10.0])


def test_multi_frame_colour_is_channels_then_frames(pydicom_file: Files) -> None:
    image = read_dicom(pydicom_file("SC_rgb_rle_2frame.dcm"))
    assert image.array.shape == (3, 2, 100, 100)


def test_monochrome1_is_inverted(pydicom_file: Files, tmp_path: Path) -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted_path = tmp_path / "mono1.dcm"
    ds.save_as(inverted_path)
    plain = read_dicom(path).array
    inverted = read_dicom(inverted_path).array
    # stored range of 16-bit signed is [-32768, 32767]; slope 1, intercept -1024
    np.testing.assert_array_equal(inverted + plain, np.full_like(plain, -1 - 2 * 1024))
    assert read_dicom(inverted_path).metadata["photometric_interpretation"] == "MONOCHROME1"


def test_per_frame_rescale_of_enhanced_multi_frame(pydicom_file: Files, tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    frames = []
    for index in range(int(ds.NumberOfFrames)):
        transform = Dataset()
        transform.RescaleSlope = 2.0
        transform.RescaleIntercept = float(index)
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([transform])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    out = tmp_path / "per_frame.dcm"
    ds.save_as(out)
    stored = ds.pixel_array.astype(np.float64)
    expected = stored * 2 + np.arange(stored.shape[0])[:, None, None]
    np.testing.assert_allclose(read_dicom(out).array[0], expected, rtol=1e-6)


@pytest.mark.parametrize("filename", ["no_meta.dcm", "no_meta_no_suffix"])
def test_missing_file_meta_is_read_with_the_parsed_encoding(
    pydicom_file: Files, tmp_path: Path, filename: str
) -> None:
    path = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    stripped = tmp_path / filename
    ds.save_as(stripped, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert stripped.read_bytes()[128:132] != b"DICM"
    image = read_image(stripped)
    np.testing.assert_array_equal(image.array, read_dicom(path).array)
    assert image.metadata["TransferSyntaxUID"] == "1.2.840.10008.1.2"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken samples
@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("rtplan.dcm", r"^DICOM has no pixel data \(RT Plan Storage, modality RTPLAN\)$"),
        ("waveform_ecg.dcm", "DICOM has no pixel data"),
        ("ExplVR_BigEndNoMeta.dcm", "DICOM has no pixel data"),
        ("rtstruct.dcm", "DICOM has no pixel data"),
        ("MR_truncated.dcm", "DICOM file is truncated"),
        (
            "SC_rgb_jpeg_gdcm.dcm",
            r"unsupported transfer syntax JPEG Lossless.*\(1\.2\.840.*pylibjpeg",
        ),
        ("JPEG-lossy.dcm", r"cannot decode JPEG Extended.*12-bit"),
        ("GDCMJ2K_TextGBR.dcm", "cannot decode JPEG 2000"),
        ("meta_missing_tsyntax.dcm", "pixel description is incomplete: missing Rows"),
        ("badVR.dcm", r"invalid DICOM NumberOfFrames '1A'"),
        ("no_meta.dcm", "not an image: not a DICOM file"),
    ],
)
def test_broken_samples_raise_a_clear_image_read_error(
    pydicom_file: Files, name: str, cause: str
) -> None:
    path = pydicom_file(name)
    with pytest.raises(ImageReadError) as info:
        read_dicom(path)
    assert info.value.path == str(path)
    assert re.search(cause, info.value.cause), info.value.cause


def test_decoder_failures_are_chained(pydicom_file: Files) -> None:
    with pytest.raises(ImageReadError) as info:
        read_dicom(pydicom_file("JPEG-lossy.dcm"))
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: "End of file reached ..."
@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.1, 0.5, 0.9])
def test_cut_files_raise_image_read_error(
    pydicom_file: Files, tmp_path: Path, fraction: float
) -> None:
    for name in ("CT_small.dcm", "MR_small_RLE.dcm"):
        data = pydicom_file(name).read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ImageReadError, match=r"truncated|no pixel data|not a DICOM"):
            read_dicom(cut)


def test_cut_pixel_data_says_truncated(pydicom_file: Files, tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:20000])
    with pytest.raises(ImageReadError, match=r"truncated \(ends inside element \(7FE0,0010\)"):
        read_dicom(cut)


def test_text_file_named_dcm_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not a DICOM file, just some notes\n" * 20)
    with pytest.raises(ImageReadError, match="not an image"):
        read_dicom(path)


def test_non_finite_float_pixels_are_rejected(pydicom_file: Files, tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.RescaleSlope = "1e39"  # overflows float32: the array would hold inf
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_dicom(path)


@pytest.mark.parametrize(
    "name", ["emri_small.dcm", "US1_J2KR.dcm", "MR2_J2KI.dcm", "SC_rgb.dcm", "US1_UNCR.dcm"]
)
def test_files_pydicom_downloads_on_demand(pydicom_file: Files, name: str) -> None:
    """Runs only where pydicom's download cache holds these files (skipped offline)."""
    path = pydicom_file(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames") or 1)
    expected = (int(ds.SamplesPerPixel), *((frames,) if frames > 1 else ()), ds.Rows, ds.Columns)
    try:
        image = read_dicom(path)
    except ImageReadError as err:  # e.g. a codec missing here: must say so, not crash
        assert "transfer syntax" in err.cause or "cannot decode" in err.cause
        return
    assert image.array.shape == expected
    assert np.isfinite(image.array).all()
