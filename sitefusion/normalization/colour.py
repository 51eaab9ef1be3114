"""Reinhard-style colour normalization of RGB images in CIE L*a*b*, learned per site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from sitefusion.errors import ConfigError
from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.checks import FloatArray, check_float, check_floats

__all__ = ["ColourNormalizer", "lab_to_rgb", "rgb_to_lab"]

# sRGB primaries with the D65 white point (IEC 61966-2-1).
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0
AUTO_SCALE_THRESHOLD = 2.0
"""With ``scale="auto"``, images whose maximum exceeds this are read as 0..255, else 0..1."""


def _channel_matrix(matrix: FloatArray, image: FloatArray) -> FloatArray:
    return np.tensordot(matrix, image, axes=(1, 0))


def rgb_to_lab(rgb: FloatArray) -> FloatArray:
    """Convert sRGB ``[3, ...]`` with values in [0, 1] (clipped) to CIE L*a*b* ``[3, ...]`` (D65).

    L* is in [0, 100]; a* and b* roughly in [-128, 127].
    """
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = _channel_matrix(_RGB_TO_XYZ, linear) / _WHITE_D65.reshape((3,) + (1,) * (c.ndim - 1))
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    return np.stack(
        [116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])],
    )


def lab_to_rgb(lab: FloatArray) -> FloatArray:
    """Convert CIE L*a*b* ``[3, ...]`` (D65) to sRGB ``[3, ...]`` in [0, 1].

    Colours outside the sRGB gamut are clipped to [0, 1].
    """
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[0] + 16.0) / 116.0
    f = np.stack([fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0])
    xyz = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    xyz = xyz * _WHITE_D65.reshape((3,) + (1,) * (lab.ndim - 1))
    linear = np.clip(_channel_matrix(_XYZ_TO_RGB, xyz), 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.asarray(np.clip(rgb, 0.0, 1.0), dtype=np.float64)


def _reference_rgb_moments(
    mean: Sequence[float], std: Sequence[float], nodes: int = 9
) -> tuple[FloatArray, FloatArray]:
    """Per-channel RGB mean and std of a Gaussian in L*a*b* with the given moments.

    Computed deterministically with a tensor Gauss-Hermite rule (``nodes**3`` points), so every
    site with the same reference gets the same output constants.
    """
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij")).reshape(3, -1)
    weight = (w[:, None, None] * w[None, :, None] * w[None, None, :]).reshape(-1)
    lab = np.asarray(mean, dtype=np.float64)[:, None] + np.asarray(std)[:, None] * grid
    rgb = lab_to_rgb(lab)
    rgb_mean = rgb @ weight
    rgb_std = np.sqrt(((rgb - rgb_mean[:, None]) ** 2) @ weight)
    return rgb_mean, np.maximum(rgb_std, 1e-6)


class ColourNormalizer(SiteNormalizer):
    """Reinhard colour transfer of a site's RGB images onto one shared L*a*b* distribution.

    Reference: E. Reinhard, M. Ashikhmin, B. Gooch, P. Shirley, "Color transfer between
    images", IEEE Computer Graphics and Applications 21(5):34-41, 2001 (here in CIE L*a*b*
    rather than lαβ, and with statistics of the whole site rather than of one image).

    Input: RGB images ``[3, H, W]`` (or ``[3, D, H, W]``), intensities in 0..1 or 0..255.
    ``fit`` refuses other channel counts.

    What ``transform`` returns, exactly:

    1. ``rgb = clip(x / scale_, 0, 1)`` (``scale_`` is 1 or 255, see ``scale``);
    2. ``lab = rgb_to_lab(rgb)`` (sRGB, D65);
    3. ``lab' = (lab - mean_) / std_ * reference_std + reference_mean`` per L*a*b* channel, where
       ``mean_`` / ``std_`` ``[3]`` are the site's L*a*b* mean and standard deviation learned
       by ``fit``;
    4. ``rgb' = lab_to_rgb(lab')`` clipped to the sRGB gamut [0, 1];
    5. ``y = (rgb' - output_mean_) / output_std_`` per RGB channel, float32 ``[3, ...]``.

    ``output_mean_`` / ``output_std_`` ``[3]`` are fixed constants: the RGB moments of a
    Gaussian L*a*b* distribution with the reference moments (Gauss-Hermite quadrature). They
    depend only on the hyper-parameters, so every site shares them, and a site's transformed
    images come out with roughly zero mean and unit variance per channel.

    Hyper-parameters:

    * ``reference_mean`` (L*, a*, b*), default ``(65, 15, 15)`` (a light skin tone), L* in
      [0, 100], a*/b* in [-128, 127];
    * ``reference_std`` (three numbers > 0), default ``(15, 8, 8)``;
    * ``scale``: ``"auto"`` (default: 255 if the largest fitted intensity exceeds
      :data:`AUTO_SCALE_THRESHOLD`, else 1) or a positive number (the value of white);
    * ``seed`` / ``samples_per_image`` (see :class:`SiteNormalizer`).

    Fitted: ``scale_`` (float), ``mean_`` / ``std_`` ``[3]`` (site L*a*b* statistics),
    ``output_mean_`` / ``output_std_`` ``[3]``, plus the common attributes (the signature is of
    the raw RGB intensities).
    """

    kind: ClassVar[str] = "colour"
    version: ClassVar[int] = 2

    scale_: float
    mean_: FloatArray
    std_: FloatArray
    output_mean_: FloatArray
    output_std_: FloatArray

    def __init__(
        self,
        *,
        reference_mean: Sequence[float] = (65.0, 15.0, 15.0),
        reference_std: Sequence[float] = (15.0, 8.0, 8.0),
        scale: float | str = "auto",
        seed: int = 0,
        samples_per_image: int = 20_000,
    ) -> None:
        super().__init__(seed=seed, samples_per_image=samples_per_image)
        owner = type(self).__name__
        mean = check_floats(owner, "reference_mean", reference_mean, length=3)
        if not (0.0 <= mean[0] <= 100.0 and all(-128.0 <= v <= 127.0 for v in mean[1:])):
            raise ConfigError(
                f"{owner}: parameter 'reference_mean' must be (L*, a*, b*) with L* in [0, 100] "
                f"and a*, b* in [-128, 127], got {reference_mean!r}"
            )
        self.reference_mean = mean
        self.reference_std = check_floats(
            owner, "reference_std", reference_std, length=3, positive=True
        )
        if isinstance(scale, str):
            if scale != "auto":
                raise ConfigError(
                    f"{owner}: parameter 'scale' must be 'auto' or a number > 0 (the intensity "
                    f"of white, e.g. 1 or 255), got {scale!r}"
                )
            self.scale: float | str = scale
        else:
            self.scale = check_float(owner, "scale", scale, low=0.0, low_open=True)

    def _check_fit_channels(self, n_channels: int, label: str) -> None:
        if n_channels != 3:
            raise ValueError(
                f"{label}: ColourNormalizer needs RGB images with 3 channels first "
                f"([3, H, W] or [3, D, H, W]), got {n_channels} channel(s); use 'zscore', "
                "'percentile' or 'histogram' for grey-level images"
            )

    def _image_stats(self, image: FloatArray) -> Any:
        return float(image.max())

    def _fit_samples(self, samples: FloatArray, image_stats: list[Any]) -> Mapping[str, Any]:
        if self.scale == "auto":
            scale = 255.0 if max(image_stats) > AUTO_SCALE_THRESHOLD else 1.0
        else:
            scale = float(self.scale)
        lab = rgb_to_lab(samples / scale)
        mean = lab.mean(axis=1)
        std = lab.std(axis=1)
        std = np.where(std > 1e-6, std, 1.0)
        out_mean, out_std = _reference_rgb_moments(self.reference_mean, self.reference_std)
        return {
            "scale_": scale,
            "mean_": mean,
            "std_": std,
            "output_mean_": out_mean,
            "output_std_": out_std,
        }

    def _fitted_shapes(self, n_channels: int) -> dict[str, tuple[int, ...]]:
        return {
            "scale_": (),
            "mean_": (3,),
            "std_": (3,),
            "output_mean_": (3,),
            "output_std_": (3,),
        }

    def _validate_fitted(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        for name in ("scale_", "std_", "output_std_"):
            if (np.asarray(values[name]) <= 0).any():
                return name, "must be > 0"
        return None

    def _check_transform_input(self, image: FloatArray, label: str) -> None:
        peak = float(image.max())
        if self.scale_ <= 1.0 and peak > AUTO_SCALE_THRESHOLD:
            raise ValueError(
                f"{label}: intensities reach {peak:g} but this ColourNormalizer was fitted on "
                f"0..{self.scale_:g} images (scale_={self.scale_:g}); rescale the image or refit"
            )

    def _transform(self, image: FloatArray) -> FloatArray:
        shape = (3,) + (1,) * (image.ndim - 1)
        lab = rgb_to_lab(image / self.scale_)
        ref_mean = np.asarray(self.reference_mean).reshape(shape)
        ref_std = np.asarray(self.reference_std).reshape(shape)
        matched = (lab - self.mean_.reshape(shape)) / self.std_.reshape(shape) * ref_std
        matched = matched + ref_mean
        rgb = lab_to_rgb(matched)
        return (rgb - self.output_mean_.reshape(shape)) / self.output_std_.reshape(shape)
