"""Training-time augmentation built from MONAI array transforms.

Geometry: random flips along every spatial axis and 90-degree rotations in the first two spatial
axes (dermoscopy and most 2D/3D medical images have no canonical in-plane orientation), plus a
mild random zoom. Intensity: small per-image scale/shift and Gaussian noise, applied *after* site
normalization so that they model residual acquisition variation rather than undo normalization.

On the feature maps of a frozen trunk (``feature_maps=True``) only the flips and rotations are
applied: a zoom of a 6 x 6 map or an intensity change of ReLU6 activations models nothing
about images. A flipped map is not exactly the map of the flipped image (learned filters are not
symmetric), so this is a regulariser in the spirit of the image augmentation, not the same one.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    RandFlip,
    RandGaussianNoise,
    RandRotate90,
    RandScaleIntensity,
    RandShiftIntensity,
    RandZoom,
)

__all__ = ["BatchAugmenter"]


class BatchAugmenter:
    """Apply a seeded MONAI augmentation pipeline to each image of a batch ``[B, C, *S]``."""

    def __init__(self, spatial_dims: int, seed: int = 0, *, feature_maps: bool = False) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        flips = [RandFlip(prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
        geometry = [*flips, RandRotate90(prob=0.5, max_k=3, spatial_axes=(0, 1))]
        self.transform = Compose(
            geometry
            if feature_maps
            else [
                *geometry,
                RandZoom(
                    prob=0.3, min_zoom=0.9, max_zoom=1.15, keep_size=True, padding_mode="edge"
                ),
                RandScaleIntensity(prob=0.5, factors=0.1),
                RandShiftIntensity(prob=0.5, offsets=0.1),
                RandGaussianNoise(prob=0.2, std=0.03),
            ]
        )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the random state (called at every epoch so that a resumed run matches)."""
        self.transform.set_random_state(seed=seed % (2**32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Augment ``batch`` ``[B, C, *S]`` image by image; returns a new float32 array."""
        out = np.empty_like(batch, dtype=np.float32)
        for i in range(batch.shape[0]):
            out[i] = np.asarray(self.transform(batch[i]), dtype=np.float32)
        return out
