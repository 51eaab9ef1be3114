"""``conform`` resizes exactly as MONAI's ``Resize`` did, without its ``MetaTensor`` overhead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Resize

from sitefusion.data import conform


def _monai(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    shrinking = all(s >= t for s, t in zip(array.shape[1:], size, strict=True))
    resize = Resize(spatial_size=size, mode="area" if shrinking else "bilinear")
    out = resize(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
    return np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 150, 200), (64, 64)),  # HAM10000's shrink (area)
        ((1, 24, 24), (32, 32)),  # enlarge (bilinear)
        ((1, 40, 20), (32, 32)),  # one axis shrinks, one grows (bilinear)
        ((1, 9, 30, 31), (8, 16, 16)),  # 3D shrink (area)
        ((2, 6, 10, 12), (8, 16, 16)),  # 3D enlarge (trilinear)
    ],
)
def test_conform_equals_monai_resize_bit_for_bit(
    shape: tuple[int, ...], size: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=shape).astype(np.uint8)
    ours = conform(array, size, shape[0])
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, _monai(array, size))


def test_an_image_of_the_right_size_is_only_cast() -> None:
    array = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    np.testing.assert_array_equal(conform(array, (4, 4), 2), array.astype(np.float32))
