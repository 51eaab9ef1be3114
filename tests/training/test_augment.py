"""Training-time augmentation of whole batches: seeded (a resumed epoch repeats), 2D and 3D,
shape-preserving, each image drawn on its own, geometry exact without a crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitefusion.training.augment import BatchAugmenter


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``image [C, H, W]``."""
    return [np.rot90(v, k, axes=(1, 2)) for v in (image, image[:, ::-1]) for k in range(4)]


@pytest.mark.parametrize("shape", [(6, 2, 16, 16), (3, 1, 8, 8, 8)])
def test_augmentation_is_seeded_and_keeps_the_shape(shape: tuple[int, ...]) -> None:
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    dims = len(shape) - 2
    a = BatchAugmenter(dims, seed=5)(batch)
    b = BatchAugmenter(dims, seed=5)(batch)
    c = BatchAugmenter(dims, seed=6)(batch)
    assert tuple(a.shape) == batch.shape and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_reseed_replays_the_same_augmentation() -> None:
    batch = np.random.default_rng(1).normal(size=(4, 1, 12, 12)).astype(np.float32)
    aug = BatchAugmenter(2, seed=0)
    aug.reseed(11)
    first = aug(batch)
    aug.reseed(11)
    torch.testing.assert_close(aug(batch), first, rtol=0, atol=0)


def test_unsupported_dimensionality_is_refused() -> None:
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        BatchAugmenter(1)


def test_bad_probabilities_and_zoom_are_refused() -> None:
    with pytest.raises(ValueError, match="p_crop must be a probability"):
        BatchAugmenter(2, p_crop=1.5)
    with pytest.raises(ValueError, match="zoom must be"):
        BatchAugmenter(2, zoom=(1.2, 0.9))


def test_a_batch_of_the_wrong_rank_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a batch \[B, C, S, S\]"):
        BatchAugmenter(2)(np.zeros((2, 8, 8), np.float32))


def test_each_image_draws_its_own_orientation() -> None:
    maps = np.random.default_rng(0).random((32, 5, 6, 6)).astype(np.float32)
    out = BatchAugmenter(2, seed=3, p_crop=0.0, p_intensity=0.0, p_noise=0.0)(maps).numpy()
    orientations = set()
    for before, after in zip(maps, out, strict=True):
        # Every output is one of the 8 flips/rotations of its input, values untouched (the
        # resampling lands on pixel centres; only rounding of the sampling weights remains).
        errors = [np.abs(after - v).max() for v in _dihedral(before)]
        assert min(errors) < 1e-5
        orientations.add(int(np.argmin(errors)))
    # A batch of 32 shows most of the 8 orientations.
    assert len(orientations) >= 5


def test_rectangular_images_are_never_rotated_by_90_degrees() -> None:
    images = np.random.default_rng(3).random((16, 1, 8, 12)).astype(np.float32)
    out = BatchAugmenter(2, seed=4, p_crop=0.0, p_intensity=0.0, p_noise=0.0)(images).numpy()
    for before, after in zip(images, out, strict=True):
        flips = [before, before[:, ::-1], before[:, :, ::-1], before[:, ::-1, ::-1]]
        assert min(np.abs(after - f).max() for f in flips) < 1e-5


def test_intensity_changes_are_per_image_and_bounded() -> None:
    images = np.ones((200, 1, 8, 8), np.float32)
    aug = BatchAugmenter(2, seed=0, p_crop=0.0, p_noise=0.0, p_intensity=1.0, intensity=0.1)
    out = aug(images).numpy()
    means = out.reshape(200, -1).mean(1)
    # x * (1 +- 0.1) +- 0.1 on a constant image of ones stays within [0.8, 1.2] ...
    assert means.min() >= 0.8 - 1e-6 and means.max() <= 1.2 + 1e-6
    # ... each image has its own draw, and each image is changed uniformly.
    assert len(np.unique(np.round(means, 5))) > 150
    assert np.allclose(out.reshape(200, -1).std(1), 0.0, atol=1e-5)


def test_crops_keep_values_within_the_images_range() -> None:
    images = np.random.default_rng(5).random((32, 1, 16, 16)).astype(np.float32)
    aug = BatchAugmenter(2, seed=2, p_crop=1.0, p_intensity=0.0, p_noise=0.0)
    out = aug(images).numpy()
    # Bilinear resampling with edge padding never leaves an image's own value range.
    assert (out.reshape(32, -1).min(1) >= images.reshape(32, -1).min(1) - 1e-6).all()
    assert (out.reshape(32, -1).max(1) <= images.reshape(32, -1).max(1) + 1e-6).all()
    changed = [
        min(np.abs(a - v).max() for v in _dihedral(b)) > 1e-3
        for a, b in zip(out, images, strict=True)
    ]
    assert sum(changed) > 24
