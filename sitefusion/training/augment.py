"""Training-time augmentation of whole batches: one batched resampling and a few tensor ops.

Each image of a batch ``[B, C, *S]`` gets its own random draw, but the work is done on the batch
at once: the geometry of every image is one affine matrix, and MONAI's
:class:`~monai.networks.layers.AffineTransform` (a batched ``grid_sample``) applies all ``B`` of
them in a single call; intensity changes are per-image broadcasts. MONAI's array transforms
(``RandFlip``, ``RandZoom``, ...) do the same per image in Python, which on 2 CPU cores cost as
much as the forward and backward passes of a small network (docs/benchmarks.md, "Augmentation").

Geometry: random flips along every spatial axis and 90-degree rotations in the first two spatial
axes (dermoscopy and most 2D/3D medical images have no canonical in-plane orientation; rotations
only where those two sides are equal), and with probability ``p_crop`` a random crop (zoom in by
up to ``max_zoom``, at a random position inside the image) or a mild zoom out with edge padding.
Flips and rotations map pixel centres onto pixel centres, so without a crop the resampling
returns the input values exactly. Intensity: small per-image scale/shift and Gaussian noise,
applied *after* site normalization so that they model residual acquisition variation rather than
undo normalization.

"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.layers import AffineTransform

__all__ = ["BatchAugmenter"]


class BatchAugmenter:
    """Seeded random augmentation of batches ``[B, C, *S]`` (``S`` 2-D or 3-D).

    Args:
        spatial_dims: 2 or 3.
        seed: the generator's seed (:meth:`reseed` resets it, so that a resumed epoch repeats).
        p_crop: probability of a random crop or zoom-out per image.
        zoom: ``(min, max)`` zoom factor of that crop (``> 1`` crops in, ``< 1`` zooms out).
        p_intensity: probability of each of the scale and the shift per image.
        intensity: largest relative scale change and largest shift (in normalized units).
        p_noise, noise_std: probability and standard deviation of added Gaussian noise.
    """

    def __init__(
        self,
        spatial_dims: int,
        seed: int = 0,
        *,
        p_crop: float = 0.5,
        zoom: tuple[float, float] = (0.9, 1.2),
        p_intensity: float = 0.5,
        intensity: float = 0.1,
        p_noise: float = 0.2,
        noise_std: float = 0.03,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for name, p in (("p_crop", p_crop), ("p_intensity", p_intensity), ("p_noise", p_noise)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if not 0 < zoom[0] <= zoom[1]:
            raise ValueError(f"zoom must be (min, max) with 0 < min <= max, got {zoom}")
        self.spatial_dims = spatial_dims
        self.p_crop = p_crop
        self.zoom = zoom
        self.p_intensity = p_intensity
        self.intensity = intensity
        self.p_noise = p_noise
        self.noise_std = noise_std
        # theta acts on normalized output coordinates (-1..1, torch's D/H/W order) and gives the
        # input coordinates sampled; border padding repeats the edge on a zoom-out.
        self._resample = AffineTransform(
            normalized=True, reverse_indexing=False, padding_mode="border", align_corners=False
        )
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the random state (called at every epoch so that a resumed run matches)."""
        self.generator.manual_seed(seed % (2**63))

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, dtype=torch.float64)

    def geometry(self, batch_size: int, spatial: tuple[int, ...]) -> torch.Tensor:
        """``[B, d, d + 1]`` affine matrices in normalized coordinates, one per image."""
        d = self.spatial_dims
        theta = torch.zeros(batch_size, d, d + 1, dtype=torch.float64)
        linear = torch.eye(d, dtype=torch.float64).repeat(batch_size, 1, 1)
        # Flips: negate an axis. Torch orders the grid's coordinates x, y(, z) = last axis first.
        flips = torch.where(self._uniform(batch_size, d) < 0.5, -1.0, 1.0)
        linear = linear * flips[:, None, :]
        # 90-degree rotations in the first two spatial axes (grid coordinates d-1 and d-2).
        a, b = d - 1, d - 2
        square = spatial[0] == spatial[1]
        k = (self._uniform(batch_size) * 4).long() if square else torch.zeros(batch_size).long()
        rot = torch.eye(d, dtype=torch.float64).repeat(batch_size, 1, 1)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[k]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[k]
        rot[:, a, a], rot[:, a, b], rot[:, b, a], rot[:, b, b] = cos, -sin, sin, cos
        linear = rot @ linear
        # A random crop: sample a 1/zoom part of the image at a random place inside it.
        crop = self._uniform(batch_size) < self.p_crop
        lo, hi = self.zoom
        z = lo + (hi - lo) * self._uniform(batch_size)
        scale = torch.where(crop, 1.0 / z, torch.ones(batch_size, dtype=torch.float64))
        slack = (1.0 - scale).abs()
        shift = (2 * self._uniform(batch_size, d) - 1) * slack[:, None]
        theta[:, :, :d] = linear * scale[:, None, None]
        theta[:, :, d] = torch.where(crop[:, None], shift, torch.zeros_like(shift))
        return theta.float()

    def __call__(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Augment ``batch [B, C, *S]``; returns a new float32 tensor of the same shape."""
        x = torch.as_tensor(batch, dtype=torch.float32)
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected a batch [B, C, {', '.join(['S'] * self.spatial_dims)}], "
                f"got shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        theta = self.geometry(n, tuple(x.shape[2:]))
        out: torch.Tensor = self._resample(x.contiguous(), theta)
        if self.p_intensity > 0:
            view = (n,) + (1,) * (x.ndim - 1)
            scale = torch.where(
                self._uniform(n) < self.p_intensity,
                1.0 + self.intensity * (2 * self._uniform(n) - 1),
                torch.ones(n, dtype=torch.float64),
            )
            shift = torch.where(
                self._uniform(n) < self.p_intensity,
                self.intensity * (2 * self._uniform(n) - 1),
                torch.zeros(n, dtype=torch.float64),
            )
            out = out * scale.float().view(view) + shift.float().view(view)
        if self.p_noise > 0:
            noisy = (self._uniform(n) < self.p_noise).float().view((n,) + (1,) * (x.ndim - 1))
            noise = torch.randn(out.shape, generator=self.generator) * self.noise_std
            out = out + noisy * noise
        return out
