"""Training-time augmentation: seeded (a resumed epoch repeats), 2D and 3D, shape-preserving."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.training.augment import BatchAugmenter


@pytest.mark.parametrize("shape", [(6, 2, 16, 16), (3, 1, 8, 8, 8)])
def test_augmentation_is_seeded_and_keeps_the_shape(shape: tuple[int, ...]) -> None:
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    dims = len(shape) - 2
    a = BatchAugmenter(dims, seed=5)(batch)
    b = BatchAugmenter(dims, seed=5)(batch)
    c = BatchAugmenter(dims, seed=6)(batch)
    assert a.shape == batch.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_reseed_replays_the_same_augmentation() -> None:
    batch = np.random.default_rng(1).normal(size=(4, 1, 12, 12)).astype(np.float32)
    aug = BatchAugmenter(2, seed=0)
    aug.reseed(11)
    first = aug(batch)
    aug.reseed(11)
    np.testing.assert_array_equal(aug(batch), first)


def test_unsupported_dimensionality_is_refused() -> None:
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        BatchAugmenter(1)


def test_feature_maps_are_only_flipped_and_rotated() -> None:
    maps = np.random.default_rng(0).random((16, 5, 6, 6)).astype(np.float32)
    out = BatchAugmenter(2, seed=3, feature_maps=True)(maps)
    moved = 0
    for before, after in zip(maps, out, strict=True):
        # Every output is one of the 8 flips/rotations of its input, values untouched.
        variants = [
            np.rot90(v, k, axes=(1, 2)) for v in (before, before[:, ::-1]) for k in range(4)
        ]
        assert any(np.array_equal(after, v) for v in variants)
        moved += not np.array_equal(after, before)
    assert moved > 0
