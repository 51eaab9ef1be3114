"""How each site's acquisition chain turns the shared content into its signal.

Each site maps the shared content ``c`` (in ``[0, 1]``) to its signal ``y`` (fraction of full
scale) as ``y = offset + gain * (c ** gamma) * exp(bias * field)`` with a smooth, site-specific
polynomial bias field in ``[-1, 1]``; for RGB the result is tinted (a fixed, stain-like tint
shared by all sites) and multiplied by a per-site, per-channel colour cast; then Gaussian noise of
standard deviation ``noise`` is added and ``y`` is clipped to ``[0, 1]``. Site brightness is
stratified: the expected mean signal of the sites is spread over ``[0.12, 0.62]`` of full scale in
a random order, so site means differ by many times the spread of image means within a site, and
gain/noise differ too (site standard deviations differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sitefusion.data.synthetic.checks import FloatArray, check_int

__all__ = ["SiteAcquisition", "acquire", "site_acquisitions"]

# The random stream of the acquisitions: default_rng([seed, _STREAM_ACQUISITION]); the content's
# streams are in sitefusion.data.synthetic.arrays.
_STREAM_ACQUISITION = 1

_RGB_TINT = (1.0, 0.78, 0.9)  # shared, stain-like tint of RGB content
_NOMINAL_CONTENT_MEAN = 0.33  # typical mean of the content, used to place site brightness
_SITE_MEAN_RANGE = (0.12, 0.62)  # expected site mean signals are stratified over this range


@dataclass(frozen=True)
class SiteAcquisition:
    """How one site turns shared content ``c`` in ``[0, 1]`` into its signal (fraction of scale).

    ``y = offset + gain * c ** gamma * exp(bias * field)``; RGB: ``y_ch = y * tint_ch *
    colour_cast[ch]``; then ``+ N(0, noise)`` and clipping to ``[0, 1]``. ``field`` is the smooth
    polynomial of :meth:`bias_field` defined by ``bias_coefficients``.

    Attributes:
        gain: contrast multiplier.
        offset: additive baseline (fraction of full scale).
        gamma: exponent applied to the content (< 1 brightens mid-tones).
        noise: standard deviation of additive Gaussian noise (fraction of full scale).
        bias: strength of the multiplicative bias field (``exp(±bias)`` at the extremes).
        colour_cast: per-channel (R, G, B) multipliers, mean 1; used for RGB only.
        bias_coefficients: linear (axes 0, 1, 2) then quadratic (axes 0, 1, 2) coefficients of
            the bias-field polynomial.
    """

    gain: float
    offset: float
    gamma: float
    noise: float
    bias: float
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bias_coefficients: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def bias_field(self, shape: Sequence[int]) -> FloatArray:
        """Multiplicative bias field ``exp(bias * field)`` of spatial ``shape`` (2 or 3 axes).

        ``field`` is ``sum_a lin_a * u_a + quad_a * (u_a**2 - 1/3)`` with ``u_a`` in ``[-1, 1]``
        along axis ``a``, scaled so that ``|field| <= 1``.
        """
        dims = len(shape)
        lin = np.asarray(self.bias_coefficients[:3], dtype=np.float64)[:dims]
        quad = np.asarray(self.bias_coefficients[3:6], dtype=np.float64)[:dims]
        norm = float(np.abs(lin).sum() + (2.0 / 3.0) * np.abs(quad).sum())
        field = np.zeros(tuple(shape))
        if norm == 0.0 or self.bias == 0.0:
            return np.ones(tuple(shape))
        for a, n in enumerate(shape):
            u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
            u = u.reshape([n if b == a else 1 for b in range(dims)])
            field = field + lin[a] * u + quad[a] * (u**2 - 1.0 / 3.0)
        result: FloatArray = np.exp(self.bias * field / norm)
        return result


def site_acquisitions(n_sites: int, seed: int = 0) -> list[SiteAcquisition]:
    """Draw the acquisition of ``n_sites`` sites, deterministically from ``seed``.

    Site brightness is stratified: the sites' expected mean signals are spread evenly (random
    order, jittered within their slot) over ``[0.12, 0.62]`` of full scale, and ``offset`` is
    solved from it, so any two sites differ in mean by at least ~0.1 of full scale for three
    sites. ``gain`` is drawn in ``[0.22, 0.42]`` (capped to avoid saturation), ``gamma`` in
    ``[0.7, 1.45]``, ``bias`` in ``[0.1, 0.3]``, ``noise`` is ``gain * [0.04, 0.12]`` and the
    colour cast is ``[0.8, 1.2]`` per channel, normalized to mean 1.
    """
    check_int("sites", n_sites, 1)
    rng = np.random.default_rng([seed, _STREAM_ACQUISITION])
    ranks = rng.permutation(n_sites)
    low, high = _SITE_MEAN_RANGE
    result = []
    for s in range(n_sites):
        position = (ranks[s] + rng.uniform(0.2, 0.8)) / n_sites
        target = low + (high - low) * position
        gamma = math.exp(rng.uniform(math.log(0.7), math.log(1.45)))
        bias = rng.uniform(0.1, 0.3)
        nominal = _NOMINAL_CONTENT_MEAN**gamma
        gain = rng.uniform(0.22, 0.42)
        # Keep the offset positive and the brightest objects (content ~0.95) below full scale.
        gain = min(gain, (target - 0.01) / nominal, (0.97 - target) / (math.exp(bias) - nominal))
        offset = target - gain * nominal
        noise = gain * rng.uniform(0.04, 0.12)
        cast = rng.uniform(0.8, 1.2, size=3)
        cast = cast / cast.mean()
        coefficients = rng.normal(size=6)
        result.append(
            SiteAcquisition(
                gain=float(gain),
                offset=float(offset),
                gamma=float(gamma),
                noise=float(noise),
                bias=float(bias),
                colour_cast=(float(cast[0]), float(cast[1]), float(cast[2])),
                bias_coefficients=tuple(float(c) for c in coefficients),
            )
        )
    return result


def acquire(
    content: FloatArray,
    acq: SiteAcquisition,
    bias_field: FloatArray,
    channels: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Signal of one image, ``[C, *spatial]`` in ``[0, 1]``, from content ``[*spatial]``."""
    # Small session-to-session drift of the same scanner.
    gain = acq.gain * rng.uniform(0.97, 1.03)
    offset = acq.offset + rng.normal(0.0, 0.003)
    y = offset + gain * np.clip(content, 0.0, 1.0) ** acq.gamma * bias_field
    if channels == 1:
        stack = y[None]
    else:
        scale = np.array(
            [_RGB_TINT[c % 3] * acq.colour_cast[c % 3] for c in range(channels)], dtype=np.float64
        )
        stack = y[None] * scale.reshape((channels,) + (1,) * y.ndim)
    stack = stack + rng.normal(0.0, acq.noise, size=stack.shape)
    result: FloatArray = np.clip(stack, 0.0, 1.0)
    return result
