"""read_nifti on nibabel's sample files and on images generated in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sitefusion.errors import ImageReadError
from sitefusion.io import read_image, read_nifti

Files = Callable[[str], Path]


def save(tmp_path: Path, data: np.ndarray, name: str = "x.nii.gz", zooms=None) -> Path:
    image = nib.Nifti1Image(data, np.eye(4))
    if zooms is not None:
        image.header.set_zooms(zooms)
    path = tmp_path / name
    nib.save(image, path)
    return path


def test_volume_is_depth_first(nibabel_file: Files) -> None:
    path = nibabel_file("anatomical.nii")
    data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))  # (X, Y, Z)
    image = read_nifti(path)
    assert image.array.shape == (1, *data.shape[::-1])
    np.testing.assert_array_equal(image.array[0], data.transpose(2, 1, 0))
    assert image.metadata["format"] == "nifti"
    assert image.metadata["spacing"] == [2.0, 2.0, 2.0]


def test_spacing_follows_the_reversed_axes(nibabel_file: Files) -> None:
    image = read_image(nibabel_file("standard.nii.gz"))  # shape (4, 5, 7), zooms (1, 3, 2)
    assert image.array.shape == (1, 7, 5, 4)
    assert image.metadata["spacing"] == [2.0, 3.0, 1.0]


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_4d_time_points_become_channels(nibabel_file: Files, name: str) -> None:
    path = nibabel_file(name)
    x, y, z, t = nib.load(path).shape
    image = read_image(path)
    assert image.array.shape == (t, z, y, x)
    assert image.metadata["ndim_original"] == 4
    assert image.metadata["spacing"] == pytest.approx([2.2, 2.0, 2.0], rel=1e-5)


def test_file_with_nan_voxels_is_rejected(nibabel_file: Files) -> None:
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(nibabel_file("resampled_anat_moved.nii"))


def test_generated_nan_volume_is_rejected(tmp_path: Path) -> None:
    path = save(tmp_path, np.full((4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(path)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((6, 5), (1, 5, 6)),
        ((6, 5, 1), (1, 5, 6)),
        ((6, 5, 4), (1, 4, 5, 6)),
        ((6, 5, 4, 1), (1, 4, 5, 6)),
        ((6, 5, 1, 3), (3, 5, 6)),
        ((6, 5, 4, 3), (3, 4, 5, 6)),
    ],
)
def test_shapes(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    image = read_nifti(save(tmp_path, data))
    assert image.array.shape == expected
    assert image.spatial_dims == len(expected) - 1


def test_2d_spacing(tmp_path: Path) -> None:
    path = save(tmp_path, np.ones((6, 5), np.float32), zooms=(0.5, 0.25))
    assert read_nifti(path).metadata["spacing"] == [0.25, 0.5]


def test_five_axes_are_unsupported(tmp_path: Path) -> None:
    path = save(tmp_path, np.ones((3, 3, 3, 2, 2), np.float32))
    with pytest.raises(ImageReadError, match="unsupported dimensionality"):
        read_nifti(path)


def test_cifti_is_refused(nibabel_file: Files) -> None:
    with pytest.raises(ImageReadError, match="unsupported format: Cifti2Image"):
        read_image(nibabel_file("row_major.dconn.nii"))


def test_pair_without_image_file(nibabel_file: Files) -> None:
    with pytest.raises(ImageReadError, match=r"image file is missing: .*nifti1\.img"):
        read_image(nibabel_file("nifti1.hdr"))


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_truncated_files(nibabel_file: Files, tmp_path: Path, name: str) -> None:
    data = nibabel_file(name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="NIfTI file is truncated"):
        read_image(cut)


def test_nii_suffix_on_other_bytes(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageReadError, match="not an image: nibabel does not recognise"):
        read_image(path)


@pytest.mark.parametrize("name", ["minc1_1_scale.mnc", "minc2_1_scale.mnc", "test.mgz"])
def test_other_neuroimaging_formats_are_not_images(nibabel_file: Files, name: str) -> None:
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(nibabel_file(name))
