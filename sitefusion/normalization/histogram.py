"""Nyúl & Udupa histogram (landmark) standardization, learned per site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from sitefusion.errors import ConfigError
from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.checks import FloatArray, check_floats

__all__ = ["HistogramNormalizer"]

DEFAULT_LANDMARKS: tuple[float, ...] = (1.0, *(10.0 * k for k in range(1, 10)), 99.0)
"""Default landmark percentiles: 1, 10, 20, ..., 90, 99."""


def _piecewise_linear(values: FloatArray, xp: FloatArray, fp: FloatArray) -> FloatArray:
    """Map ``values`` through the polyline ``(xp, fp)`` with linear extrapolation at both ends.

    ``xp`` is non-decreasing and may repeat (an image whose landmarks coincide, e.g. a large
    uniform background): tied landmarks collapse to one knot whose target is the mean of their
    targets, which keeps the map a function.
    """
    knots, inverse = np.unique(xp, return_inverse=True)
    targets = np.bincount(inverse, weights=fp) / np.bincount(inverse)
    if knots.size == 1:
        return np.full_like(values, targets[0])
    out = np.interp(values, knots, targets)
    below = values < knots[0]
    above = values > knots[-1]
    slope_low = (targets[1] - targets[0]) / (knots[1] - knots[0])
    slope_high = (targets[-1] - targets[-2]) / (knots[-1] - knots[-2])
    out[below] = targets[0] + (values[below] - knots[0]) * slope_low
    out[above] = targets[-1] + (values[above] - knots[-1]) * slope_high
    return out


class HistogramNormalizer(SiteNormalizer):
    """Piecewise-linear histogram standardization (Nyúl & Udupa), one standard per site.

    Reference: L. G. Nyúl, J. K. Udupa, X. Zhang, "New variants of a method of MRI scale
    standardization", IEEE Transactions on Medical Imaging 19(2):143-150, 2000.

    Per channel:

    * **fit** - for every training image, compute its intensities at the ``landmarks``
      percentiles ``m_1 <= ... <= m_L`` (the first and last are ``p_low`` / ``p_high``), map them
      linearly so that ``p_low -> s_min`` and ``p_high -> s_max`` (``standard_range``), and
      average the mapped landmarks over the site's images: ``standard_landmarks_`` ``[C, L]``
      (first column ``s_min``, last ``s_max``). Images with a constant channel are skipped for
      that channel.
    * **transform** - compute the image's own landmarks and map its intensities piecewise-
      linearly onto ``standard_landmarks_`` (``np.interp`` between landmarks, linear
      extrapolation below ``p_low`` and above ``p_high`` using the end segments). With
      ``rescale`` (default) the result is then mapped ``s_min -> 0, s_max -> 1``, so the image's
      ``p_low``/``p_high`` land on 0/1 and CNN inputs are roughly unit range.

    Hyper-parameters: ``landmarks`` (strictly increasing percentiles in [0, 100], at least 2;
    default ``(1, 10, 20, ..., 90, 99)``), ``standard_range`` (``(s_min, s_max)``, default
    ``(0, 100)``), ``rescale`` (bool, default True), plus ``seed`` / ``samples_per_image``
    (used for the signature only; landmarks use every pixel).

    Landmarks are taken over all pixels, not a foreground mask: images with a large uniform
    background get tied low landmarks, which the map handles (see ``_piecewise_linear``); a
    channel that is constant in the transformed image maps to the mean of the standard landmarks.

    Output: float32, same shape.
    """

    kind: ClassVar[str] = "histogram"
    version: ClassVar[int] = 1

    standard_landmarks_: FloatArray

    def __init__(
        self,
        *,
        landmarks: Sequence[float] = DEFAULT_LANDMARKS,
        standard_range: Sequence[float] = (0.0, 100.0),
        rescale: bool = True,
        seed: int = 0,
        samples_per_image: int = 20_000,
    ) -> None:
        super().__init__(seed=seed, samples_per_image=samples_per_image)
        owner = type(self).__name__
        self.landmarks = check_floats(
            owner, "landmarks", landmarks, min_length=2, low=0.0, high=100.0, increasing=True
        )
        self.standard_range = check_floats(
            owner, "standard_range", standard_range, length=2, increasing=True
        )
        if not isinstance(rescale, bool):
            raise ConfigError(
                f"{owner}: parameter 'rescale' must be true or false, got {rescale!r}"
            )
        self.rescale = rescale

    def image_landmarks(self, image: FloatArray) -> FloatArray:
        """The image's intensities at ``landmarks`` percentiles: ``[C, L]`` (image ``[C, ...]``)."""
        flat = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)
        return np.asarray(np.percentile(flat, self.landmarks, axis=1).T, dtype=np.float64)

    def _image_stats(self, image: FloatArray) -> Any:
        return self.image_landmarks(image)

    def _fit_samples(self, samples: FloatArray, image_stats: list[Any]) -> Mapping[str, Any]:
        s_min, s_max = self.standard_range
        per_image = np.stack(image_stats)  # [N, C, L]
        low, high = per_image[:, :, :1], per_image[:, :, -1:]
        span = high - low
        tiny = np.finfo(np.float64).eps * np.maximum(1.0, np.abs(per_image).max(axis=2)) * 16
        valid = span[:, :, 0] > tiny  # [N, C]
        mapped = s_min + (per_image - low) / np.where(span > 0, span, 1.0) * (s_max - s_min)
        counts = valid.sum(axis=0)  # [C]
        if (counts == 0).any():
            channel = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(
                f"HistogramNormalizer.fit: channel {channel} has p{self.landmarks[0]:g} == "
                f"p{self.landmarks[-1]:g} in every image (constant intensities); landmark "
                "standardization needs intensity variation"
            )
        standard = (mapped * valid[:, :, None]).sum(axis=0) / counts[:, None]
        # Pin the ends exactly (averaging can leave round-off) and keep the curve monotone.
        standard[:, 0], standard[:, -1] = s_min, s_max
        standard = np.maximum.accumulate(standard, axis=1)
        return {"standard_landmarks_": standard}

    def _fitted_shapes(self, n_channels: int) -> dict[str, tuple[int, ...]]:
        return {"standard_landmarks_": (n_channels, len(self.landmarks))}

    def _validate_fitted(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        if (np.diff(values["standard_landmarks_"], axis=1) < 0).any():
            return "standard_landmarks_", "each channel's landmarks must be non-decreasing"
        return None

    def _transform(self, image: FloatArray) -> FloatArray:
        own = self.image_landmarks(image)
        flat = image.reshape(image.shape[0], -1)
        out = np.empty_like(flat)
        for c in range(flat.shape[0]):
            out[c] = _piecewise_linear(flat[c], own[c], self.standard_landmarks_[c])
        if self.rescale:
            s_min, s_max = self.standard_range
            out = (out - s_min) / (s_max - s_min)
        return out.reshape(image.shape)
