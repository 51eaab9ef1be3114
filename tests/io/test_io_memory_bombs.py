"""Small files that inflate or decode to gigabytes are refused before they are inflated or
decoded (issue 31, class 1).

Each case is read in a child process whose address space is capped at what it had after its
imports plus :data:`BUDGET` (1 GiB: the most scoring one file may take), so a reader that
inflates or decodes the whole bomb fails fast with ``MemoryError`` instead of eating the
machine; the test also bounds the child's peak resident memory (``VmHWM``).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

BUDGET = 1 << 30
GIB = 1 << 30

_CHILD = r"""
import json, resource, sys
from sitefusion.io import read_image
from sitefusion.io.dicom import read_dicom_dataset
import nibabel, numpy, PIL.Image, pydicom  # mapped before the limit is measured

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
limit = status("VmSize") + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = {}
try:
    if sys.argv[2] == "header":
        ds = read_dicom_dataset(sys.argv[1], stop_before_pixels=True)
        out["rows"] = int(ds.Rows)
    else:
        image = read_image(sys.argv[1])
        out["shape"] = list(image.array.shape)
except Exception as err:
    out["error"] = f"{type(err).__name__}: {err}"
out["peak"] = status("VmHWM")  # this process's own peak (ru_maxrss survives exec)
print(json.dumps(out))
"""


def _read_in_child(path: Path, mode: str = "image") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode, str(BUDGET)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        | {k: v for k, v in __import__("os").environ.items() if k == "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _deflated_dicom(path: Path, pixel_bytes: int, rows: int = 512) -> None:
    """A deflated DICOM whose header describes a ``rows`` x ``rows`` 16-bit image but whose
    Pixel Data holds ``pixel_bytes`` zero bytes; written in a stream, never held whole."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.Rows = ds.Columns = rows
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = path.with_suffix(".head")
    ds.save_as(head, enforce_file_format=True)
    meta = pydicom.filereader.read_file_meta_info(head)
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, ds)
    raw = head.read_bytes()
    # everything before the deflated data set: preamble, DICM, file meta
    meta_len = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    head.unlink()
    packer = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(16 << 20)
    with path.open("wb") as fh:
        fh.write(raw[:meta_len])
        fh.write(packer.compress(body.getvalue()))
        fh.write(packer.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)))
        left = pixel_bytes
        while left:
            n = min(left, len(zeros))
            fh.write(packer.compress(zeros[:n]))
            left -= n
        fh.write(packer.flush())


def test_a_deflated_dicom_that_inflates_past_what_its_header_needs(tmp_path: Path) -> None:
    """Before: pydicom inflated the whole data set to read even the header (MemoryError in a
    1 GiB budget; 10.6 GB for ``score`` without one)."""
    path = tmp_path / "bomb.dcm"
    _deflated_dicom(path, int(1.5 * GIB))
    assert path.stat().st_size < 8_000_000
    result = _read_in_child(path)
    assert "inflates to more than" in result.get("error", ""), result
    assert str(path) in result["error"]
    assert result["peak"] < 400e6, result
    header = _read_in_child(path, "header")  # what discovery reads: the honest header
    assert header.get("rows") == 512, header
    assert header["peak"] < 400e6, header


def test_a_deflated_dicom_of_honest_size_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "honest.dcm"
    _deflated_dicom(path, 64 * 64 * 2, rows=64)
    result = _read_in_child(path)
    assert result.get("shape") == [1, 64, 64], result
    assert _read_in_child(path, "header").get("rows") == 64


def _gzip_stream(path: Path, head: bytes, zero_bytes: int) -> None:
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = bytes(16 << 20)
    with path.open("wb") as fh:
        fh.write(packer.compress(head))
        left = zero_bytes
        while left:
            n = min(left, len(zeros))
            fh.write(packer.compress(zeros[:n]))
            left -= n
        fh.write(packer.flush())


def _nifti_header(shape: tuple[int, ...], offset: int = 352) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_data_offset(offset)
    return header.binaryblock + b"\0" * 4


def test_a_gzipped_nifti_not_named_nii_gz_is_inflated_only_as_far_as_its_header_needs(
    tmp_path: Path,
) -> None:
    """Before: ``gzip.decompress`` of the whole file (1.5 MB -> 3.4 GB in the report)."""
    claims_small = tmp_path / "scan.dat"
    _gzip_stream(claims_small, _nifti_header((16, 16, 16)), int(1.5 * GIB))
    result = _read_in_child(claims_small)
    assert result.get("shape") == [1, 16, 16, 16], result
    assert result["peak"] < 400e6, result
    claims_big = tmp_path / "big.dat"
    _gzip_stream(claims_big, _nifti_header((1024, 1024, 1024)), int(1.2 * GIB))
    result = _read_in_child(claims_big)
    assert "describes a 1024x1024x1024 image" in result.get("error", ""), result
    assert result["peak"] < 400e6, result
    far_offset = tmp_path / "offset.dat"  # a tiny image whose voxels start 1.2 GB in
    _gzip_stream(far_offset, _nifti_header((4, 4), offset=1_200_000_000), int(1.2 * GIB))
    result = _read_in_child(far_offset)
    assert "voxel offset (vox_offset) is 1,200,000,000 bytes" in result.get("error", ""), result
    assert result["peak"] < 400e6, result


def test_a_png_below_pillows_bomb_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    """Before: a 12000x12000 grey PNG (140 KB) was decoded to float32 (over 700 MB) and
    only then found too large."""
    path = tmp_path / "big.png"
    Image.new("L", (12_000, 12_000)).save(path, optimize=True)
    result = _read_in_child(path)
    assert "describes a 1x12000x12000 image" in result.get("error", ""), result
    assert str(path) in result["error"]
    assert result["peak"] < 300e6, result


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_within_the_limit(tmp_path: Path) -> None:
    """Before: a 9000x9000 RGB JPEG (236 KB) was decoded whole to float32 (about 1 GB) before
    any check. Now its DCT scaling decodes it at the largest size within the limit."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (9_000, 9_000), (120, 30, 200)).save(path, quality=50)
    result = _read_in_child(path)
    assert result.get("shape") == [3, 4500, 4500], result
    assert result["peak"] < 600e6, result


def test_a_series_too_large_in_sum_is_refused_from_its_headers(tmp_path: Path) -> None:
    """Before: every slice was read whole (pixels included) before the series' size was
    checked, so a series of many large slices was held in memory only to be refused."""
    import tracemalloc

    import pytest

    from sitefusion.errors import ImageReadError
    from sitefusion.io import read_dicom_series

    src = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    files = []
    for i in range(3):
        ds = src.copy()
        ds.Rows = ds.Columns = 1024
        ds.PixelData = bytes(1024 * 1024 * 2)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        files.append(tmp_path / f"s{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="describes a 3x1024x1024x1 image"):
            read_dicom_series(files, max_elements=2_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # one slice's pixels are 2 MB: none was read


def test_the_raster_limit_is_the_setting_and_a_jpeg_reduction_is_recorded(
    tmp_path: Path,
) -> None:
    import pytest

    from sitefusion.errors import ImageReadError
    from sitefusion.io import read_image

    png = tmp_path / "a.png"
    Image.new("LA", (100, 100)).save(png)  # two bands decoded, one grey channel kept
    with pytest.raises(ImageReadError, match=r"describes a 2x100x100 image .* limit of 15,000"):
        read_image(png, max_elements=15_000)
    assert read_image(png, max_elements=20_000).array.shape == (1, 100, 100)
    jpg = tmp_path / "a.jpg"
    Image.new("RGB", (100, 100), (10, 200, 30)).save(jpg)
    small = read_image(jpg, max_elements=10_000)
    assert small.array.shape == (3, 50, 50) and small.metadata["reduced_by"] == 2
    whole = read_image(jpg)
    assert whole.array.shape == (3, 100, 100) and "reduced_by" not in whole.metadata
    with pytest.raises(ImageReadError, match="describes a 3x100x100 image"):
        read_image(jpg, max_elements=100)  # too large even at 1/8


def test_pydicoms_deflated_sample_reads_as_pydicom_reads_it(
    pydicom_file: Callable[[str], Path],
) -> None:
    """The bounded inflation parses deflated files to the same data set as pydicom."""
    from sitefusion.io import read_image
    from sitefusion.io.dicom import read_dicom_dataset

    path = pydicom_file("image_dfl.dcm")
    reference = pydicom.dcmread(path)
    assert reference.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert read_dicom_dataset(path) == reference
    assert read_dicom_dataset(path, stop_before_pixels=True).Rows == reference.Rows
    image = read_image(path)
    assert np.array_equal(image.array[0], reference.pixel_array.astype(np.float32))
    assert image.metadata["TransferSyntaxUID"] == DeflatedExplicitVRLittleEndian


def test_a_deflated_dicom_without_its_preamble_is_bounded_too(tmp_path: Path) -> None:
    """pydicom reads the file meta of a file that starts with it (no 128-byte preamble and
    ``DICM``) and inflates a deflated data set whole there too, both when the reader parses a
    ``.dcm`` and when format detection tries a file of another name as DICOM."""
    whole = tmp_path / "with_preamble.dcm"
    _deflated_dicom(whole, int(1.5 * GIB))
    for name in ("bare.dcm", "bare.bin"):
        bare = tmp_path / name
        with whole.open("rb") as src, bare.open("wb") as dst:
            src.seek(132)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        result = _read_in_child(bare)
        assert "inflates to more than" in result.get("error", ""), result
        assert result["peak"] < 400e6, result
