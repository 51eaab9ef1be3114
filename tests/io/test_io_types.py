"""ImageData's contract and the metadata helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sitefusion.errors import ImageReadError
from sitefusion.io import ImageData
from sitefusion.io.types import build_image


def test_image_data_2d_and_3d_properties() -> None:
    flat = ImageData(np.zeros((3, 4, 5), np.float32), {"format": "png"})
    volume = ImageData(np.zeros((1, 2, 4, 5), np.float32))
    assert (flat.spatial_dims, flat.channels) == (2, 3)
    assert (volume.spatial_dims, volume.channels) == (3, 1)


def test_image_data_is_frozen() -> None:
    image = ImageData(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(AttributeError):
        image.metadata = {}  # type: ignore[misc]


@pytest.mark.parametrize(
    ("array", "metadata"),
    [
        (np.zeros((1, 2, 2), np.float64), {}),
        (np.zeros((2, 2), np.float32), {}),
        (np.zeros((1, 1, 1, 2, 2), np.float32), {}),
        (np.zeros((1, 2, 2), np.float32), {"spacing": np.array([1.0, 1.0])}),
        (np.zeros((1, 2, 2), np.float32), {"scale": float("nan")}),
    ],
)
def test_image_data_rejects_contract_violations(array: np.ndarray, metadata: dict) -> None:
    with pytest.raises(ValueError, match="ImageData"):
        ImageData(array, metadata)


def test_build_image_casts_and_rejects_non_finite(tmp_path: Path) -> None:
    image = build_image(tmp_path / "x", np.ones((1, 2, 2), np.int16), {"a": 1, "b": None})
    assert image.array.dtype == np.float32
    assert image.metadata == {"a": 1}
    bad = np.ones((1, 2, 2))
    bad[0, 0, 0] = np.inf
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        build_image(tmp_path / "x", bad, {})
    with pytest.raises(ImageReadError, match="unsupported dimensionality"):
        build_image(tmp_path / "x", np.ones((2, 2)), {})
