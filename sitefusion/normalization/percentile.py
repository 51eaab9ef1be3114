"""Per-channel percentile (robust min-max) scaling to [0, 1]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sitefusion.errors import ConfigError
from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.checks import FloatArray, check_float

__all__ = ["PercentileNormalizer"]


class PercentileNormalizer(SiteNormalizer):
    """Map each channel's site percentiles ``[low, high]`` linearly onto ``[0, 1]``.

    ``y = (x - bounds_[c, 0]) / (bounds_[c, 1] - bounds_[c, 0])`` per channel ``c``, then clipped
    to ``[0, 1]`` when ``clip`` is true.

    Hyper-parameters: ``low`` / ``high`` percentiles, ``0 <= low < high <= 100`` (defaults 1 and
    99), ``clip`` (bool, default True), plus ``seed`` and ``samples_per_image``.

    Fitted: ``bounds_`` ``[C, 2]`` (the site intensities at the two percentiles; a constant
    channel gets a range of 1), plus the common attributes. Output: float32, same shape, in
    ``[0, 1]`` when clipping.
    """

    kind: ClassVar[str] = "percentile"
    version: ClassVar[int] = 1

    bounds_: FloatArray

    def __init__(
        self,
        *,
        low: float = 1.0,
        high: float = 99.0,
        clip: bool = True,
        seed: int = 0,
        samples_per_image: int = 20_000,
    ) -> None:
        super().__init__(seed=seed, samples_per_image=samples_per_image)
        owner = type(self).__name__
        self.low = check_float(owner, "low", low, low=0.0, high=100.0)
        self.high = check_float(owner, "high", high, low=0.0, high=100.0)
        if self.high <= self.low:
            raise ConfigError(
                f"{owner}: parameter 'high' must be greater than 'low' (both percentiles in "
                f"[0, 100]), got low={low!r}, high={high!r}"
            )
        if not isinstance(clip, bool):
            raise ConfigError(f"{owner}: parameter 'clip' must be true or false, got {clip!r}")
        self.clip = clip

    def _fit_samples(self, samples: FloatArray, image_stats: list[Any]) -> Mapping[str, Any]:
        bounds = np.percentile(samples, (self.low, self.high), axis=1).T
        span = bounds[:, 1] - bounds[:, 0]
        tiny = np.finfo(np.float64).eps * np.maximum(1.0, np.abs(bounds).max(axis=1)) * 16
        # A constant channel: widen to a unit range so it maps to 0 rather than dividing by 0.
        bounds[:, 1] = np.where(span > tiny, bounds[:, 1], bounds[:, 0] + 1.0)
        return {"bounds_": bounds}

    def _fitted_shapes(self, n_channels: int) -> dict[str, tuple[int, ...]]:
        return {"bounds_": (n_channels, 2)}

    def _validate_fitted(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        if (values["bounds_"][:, 1] <= values["bounds_"][:, 0]).any():
            return "bounds_", "each [low, high] pair must have low < high"
        return None

    def _transform(self, image: FloatArray) -> FloatArray:
        shape = (-1,) + (1,) * (image.ndim - 1)
        low = self.bounds_[:, 0].reshape(shape)
        span = (self.bounds_[:, 1] - self.bounds_[:, 0]).reshape(shape)
        scaled = (image - low) / span
        return np.clip(scaled, 0.0, 1.0) if self.clip else scaled
