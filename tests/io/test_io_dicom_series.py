"""find_dicom_series / read_dicom_series on series built in tmp_path from a real CT slice."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.uid import generate_uid

from sitefusion.errors import ImageReadError
from sitefusion.io import find_dicom_series, read_dicom_series, read_image

Files = Callable[[str], Path]
SLICE_GAP_MM = 2.5


def write_series(
    source: Path,
    folder: Path,
    count: int = 5,
    *,
    series_uid: str | None = None,
    seed: int = 0,
    positions: bool = True,
    prefix: str = "slice",
) -> list[str]:
    """Write ``count`` copies of ``source`` as one series in shuffled file order.

    Slice ``k`` sits ``k * SLICE_GAP_MM`` along the normal and has pixels ``+ 10 * k`` so the
    order can be read back from the values. Returns the SOPInstanceUIDs in true slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    order = list(range(count))
    random.Random(seed).shuffle(order)  # file names and InstanceNumbers do not follow position
    uids = [generate_uid() for _ in range(count)]
    for file_index, k in enumerate(order):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = uids[k]
        ds.file_meta.MediaStorageSOPInstanceUID = uids[k]
        ds.InstanceNumber = file_index + 1
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        row, col = (
            np.array([float(v) for v in ds.ImageOrientationPatient[i : i + 3]]) for i in (0, 3)
        )
        normal = np.cross(row, col)
        if positions:
            ds.ImagePositionPatient = [float(v) for v in origin + k * SLICE_GAP_MM * normal]
        else:
            del ds.ImagePositionPatient
            ds.InstanceNumber = k + 1
        ds.PixelData = (ds.pixel_array + 10 * k).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"{prefix}_{file_index:03d}.dcm")
    return uids


def test_series_is_sorted_along_the_slice_normal(pydicom_file: Files, tmp_path: Path) -> None:
    source = pydicom_file("CT_small.dcm")
    uids = write_series(source, tmp_path / "series", 6)
    (tmp_path / "series" / "README.txt").write_text("not dicom")  # ignored in a folder
    image = read_dicom_series(tmp_path / "series")
    base = read_image(source).array[0]
    assert image.array.shape == (1, 6, 128, 128)
    for k in range(6):
        np.testing.assert_array_equal(image.array[0, k], base + 10 * k)
    assert image.metadata["SOPInstanceUIDs"] == uids
    assert image.metadata["spacing"] == pytest.approx([SLICE_GAP_MM, 0.661468, 0.661468])
    assert image.metadata["format"] == "dicom-series"
    assert image.metadata["slice_order"] == "position"
    assert image.metadata["slice_spacing_uniform"] is True
    assert image.metadata["num_frames"] == 6
    json.dumps(image.metadata)


def test_read_image_on_a_folder_reads_the_series(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 3)
    assert read_image(tmp_path / "s").array.shape == (1, 3, 128, 128)


def test_file_list_gives_the_same_volume(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 4)
    files = sorted((tmp_path / "s").glob("*.dcm"), reverse=True)
    from_files = read_dicom_series(files)
    np.testing.assert_array_equal(from_files.array, read_dicom_series(tmp_path / "s").array)


def test_instance_number_orders_slices_without_positions(
    pydicom_file: Files, tmp_path: Path
) -> None:
    source = pydicom_file("CT_small.dcm")
    write_series(source, tmp_path / "s", 4, positions=False)
    image = read_dicom_series(tmp_path / "s")
    base = read_image(source).array[0]
    for k in range(4):
        np.testing.assert_array_equal(image.array[0, k], base + 10 * k)
    assert image.metadata["slice_order"] == "instance_number"
    # no positions: the slice spacing comes from the header's SpacingBetweenSlices
    stated = float(pydicom.dcmread(source).SpacingBetweenSlices)
    assert image.metadata["spacing"] == pytest.approx([stated, 0.661468, 0.661468])


def test_two_series_in_one_folder_is_an_error(pydicom_file: Files, tmp_path: Path) -> None:
    source = pydicom_file("CT_small.dcm")
    write_series(source, tmp_path / "mixed", 3, prefix="a")
    write_series(source, tmp_path / "mixed", 2, prefix="b")
    with pytest.raises(ImageReadError, match=r"holds 2 DICOM series: .*pass the files"):
        read_image(tmp_path / "mixed")


def test_find_dicom_series_groups_and_skips_non_dicom(pydicom_file: Files, tmp_path: Path) -> None:
    source = pydicom_file("CT_small.dcm")
    write_series(source, tmp_path / "x", 3, series_uid="1.2.3.1", prefix="a")
    write_series(source, tmp_path / "x", 2, series_uid="1.2.3.2", prefix="b")
    (tmp_path / "x" / "empty.dcm").write_bytes(b"")
    (tmp_path / "x" / "notes.txt").write_text("hello")
    groups = find_dicom_series([tmp_path / "x"])
    assert {uid: len(files) for uid, files in groups.items()} == {"1.2.3.1": 3, "1.2.3.2": 2}
    assert all(p.name.startswith("a_") for p in groups["1.2.3.1"])


def test_slices_of_different_shape_are_an_error(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 3)
    odd = tmp_path / "s" / "slice_001.dcm"
    ds = pydicom.dcmread(odd)
    ds.PixelData = ds.pixel_array[:64].tobytes()
    ds.Rows = 64
    ds.save_as(odd)
    with pytest.raises(ImageReadError, match=r"slice shape \[1, 64, 128\] differs"):
        read_dicom_series(tmp_path / "s")


def test_repeated_positions_are_an_error(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 3)
    copy = pydicom.dcmread(tmp_path / "s" / "slice_000.dcm")
    copy.SOPInstanceUID = generate_uid()
    copy.save_as(tmp_path / "s" / "echo2.dcm")
    with pytest.raises(ImageReadError, match="shares its slice position"):
        read_dicom_series(tmp_path / "s")


def test_folder_without_dicom_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ImageReadError, match="no DICOM image files found"):
        read_image(tmp_path)


def test_listed_non_dicom_file_is_named(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 2)
    stray = tmp_path / "s" / "stray.dcm"
    stray.write_text("not dicom at all, just text " * 10)
    with pytest.raises(ImageReadError, match="not an image") as info:
        read_dicom_series(sorted((tmp_path / "s").iterdir()))
    assert info.value.path == str(stray)


def test_single_file_series_is_that_image(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "one", 1)
    image = read_dicom_series(tmp_path / "one")
    assert image.array.shape == (1, 128, 128)


def _dicomdir_folder(name: str) -> Path:
    folder = Path(pydicom.data.get_testdata_file("DICOMDIR", download=False) or "").parent / name
    if not folder.is_dir():
        pytest.skip(f"pydicom test folder dicomdirtests/{name} is not available")
    return folder


def test_real_ct_series_is_sorted_by_position() -> None:
    folder = _dicomdir_folder("77654033/CT2")
    image = read_image(folder)
    assert image.array.shape == (1, 4, 16, 16)
    assert image.metadata["slice_order"] == "position"
    along = []
    for path in image.metadata["files"]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        along.append(
            float(np.dot([float(v) for v in ds.ImagePositionPatient], np.cross(iop[:3], iop[3:])))
        )
    assert along == sorted(along)
    # this sample keeps slices 18, 180, 181, 182: the spacing is the median step, flagged
    assert image.metadata["spacing"][0] == pytest.approx(along[3] - along[2])
    assert image.metadata["slice_spacing_uniform"] is False


def test_real_scout_series_with_two_orientations_is_refused() -> None:
    with pytest.raises(ImageReadError, match="different orientations"):
        read_image(_dicomdir_folder("98892001/CT2N"))


def test_real_folder_with_several_series_lists_some_of_them() -> None:
    with pytest.raises(
        ImageReadError, match=r"holds 7 DICOM series: .*\(1 file\), and 4 more; pass"
    ):
        read_image(_dicomdir_folder("98892003"))


def test_damaged_slice_in_a_folder_is_reported(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 4)
    damaged = tmp_path / "s" / "slice_002.dcm"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # cut inside the header
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_dicom_series(tmp_path / "s")
    assert info.value.path == str(damaged)


def test_slice_cut_inside_an_element_says_truncated(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 3)
    damaged = tmp_path / "s" / "slice_001.dcm"
    damaged.write_bytes(damaged.read_bytes()[:-300])  # cut inside Pixel Data
    with pytest.raises(ImageReadError, match=r"DICOM file is truncated \(ends inside") as info:
        read_dicom_series(tmp_path / "s")
    assert info.value.path == str(damaged)


def test_dicomdir_next_to_a_series_is_ignored(pydicom_file: Files, tmp_path: Path) -> None:
    write_series(pydicom_file("CT_small.dcm"), tmp_path / "s", 2)
    (tmp_path / "s" / "DICOMDIR").write_bytes(pydicom_file("DICOMDIR").read_bytes())
    assert read_dicom_series(tmp_path / "s").array.shape == (1, 2, 128, 128)
