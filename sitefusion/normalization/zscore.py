"""Per-channel z-score normalization after percentile clipping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.checks import FloatArray, check_floats

__all__ = ["ZScoreNormalizer"]


def _safe_scale(scale: FloatArray, centre: FloatArray) -> FloatArray:
    # A constant channel has std (or range) 0: divide by 1 instead, so it maps to 0.
    tiny = np.finfo(np.float64).eps * np.maximum(1.0, np.abs(centre)) * 16
    return np.where(scale > tiny, scale, 1.0)


class ZScoreNormalizer(SiteNormalizer):
    """Clip each channel to site percentiles, then subtract the site mean and divide by its std.

    ``y = (clip(x, bounds_[c, 0], bounds_[c, 1]) - mean_[c]) / std_[c]`` per channel ``c``.

    Hyper-parameters: ``clip`` = ``(low, high)`` percentiles with ``0 <= low < high <= 100``
    (default ``(0.5, 99.5)``; ``(0, 100)`` disables clipping in effect), plus ``seed`` and
    ``samples_per_image`` (see :class:`SiteNormalizer`).

    Fitted: ``bounds_`` ``[C, 2]`` (the clip intensities), ``mean_`` and ``std_`` ``[C]`` of the
    clipped site intensities (``std_`` is 1 for a constant channel), plus the common attributes.
    Output: float32, same shape; the site's clipped intensities have mean 0 and std 1.
    """

    kind: ClassVar[str] = "zscore"
    version: ClassVar[int] = 1

    bounds_: FloatArray
    mean_: FloatArray
    std_: FloatArray

    def __init__(
        self,
        *,
        clip: Sequence[float] = (0.5, 99.5),
        seed: int = 0,
        samples_per_image: int = 20_000,
    ) -> None:
        super().__init__(seed=seed, samples_per_image=samples_per_image)
        self.clip = check_floats(
            type(self).__name__, "clip", clip, length=2, low=0.0, high=100.0, increasing=True
        )

    def _fit_samples(self, samples: FloatArray, image_stats: list[Any]) -> Mapping[str, Any]:
        bounds = np.percentile(samples, self.clip, axis=1).T
        clipped = np.clip(samples, bounds[:, :1], bounds[:, 1:])
        mean = clipped.mean(axis=1)
        std = _safe_scale(clipped.std(axis=1), mean)
        return {"bounds_": bounds, "mean_": mean, "std_": std}

    def _fitted_shapes(self, n_channels: int) -> dict[str, tuple[int, ...]]:
        return {"bounds_": (n_channels, 2), "mean_": (n_channels,), "std_": (n_channels,)}

    def _validate_fitted(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        if (values["std_"] <= 0).any():
            return "std_", "must be > 0"
        if (values["bounds_"][:, 1] < values["bounds_"][:, 0]).any():
            return "bounds_", "each [low, high] pair must have low <= high"
        return None

    def _transform(self, image: FloatArray) -> FloatArray:
        shape = (-1,) + (1,) * (image.ndim - 1)
        low = self.bounds_[:, 0].reshape(shape)
        high = self.bounds_[:, 1].reshape(shape)
        clipped = np.clip(image, low, high)
        return (clipped - self.mean_.reshape(shape)) / self.std_.reshape(shape)
