"""Images of sites a :class:`~sitefusion.normalization.bank.NormalizerBank` does not know.

An image of a known site is normalized with its own site's parameters; an image of an unseen
site (or with no site) follows the bank's ``unseen_policy`` (:data:`UNSEEN_POLICIES`):

* ``"nearest"`` - the known site whose intensity ``signature_`` is closest to the image's
  signature (mean absolute difference of the per-channel percentiles,
  :func:`signature_distances`, :func:`nearest`);
* ``"self"`` - a fresh normalizer of the same kind fitted on that image (or batch) alone;
* ``"pooled"`` - the pooled normalizer.

Every result is a :class:`NormalizedImage` that says which parameters were used and why. An
image whose intensities its normalizer cannot represent (a constant image, one mapped to a
single value, one mostly outside the range the site was fitted on) is named by
:func:`degenerate_intensities` and :func:`outside_fitted_range`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from sitefusion.errors import UnknownChoiceError
from sitefusion.normalization.base import SiteNormalizer

__all__ = [
    "POOLED_SITE",
    "SELF_SITE",
    "UNSEEN_POLICIES",
    "NormalizedImage",
    "Policy",
    "check_policy",
    "degenerate_intensities",
    "nearest",
    "outside_fitted_range",
    "signature_distances",
]

Policy = Literal["known", "nearest", "self", "pooled"]
"""How the parameters of a :class:`NormalizedImage` were chosen."""

UNSEEN_POLICIES: tuple[str, ...] = ("nearest", "self", "pooled")
"""Valid ``unseen_policy`` values of :class:`~sitefusion.normalization.bank.NormalizerBank`."""

POOLED_SITE = "<pooled>"
"""``NormalizedImage.site_used`` when the pooled normalizer was used (a reserved site name)."""

SELF_SITE = "<self>"
"""``NormalizedImage.site_used`` when a normalizer was fitted on the image itself (reserved)."""


@dataclass(frozen=True)
class NormalizedImage:
    """One normalized image and where its normalization parameters came from.

    ``array``: float32 ``[C, H, W]`` or ``[C, D, H, W]``; ``site_used``: the site whose
    parameters were applied, or :data:`POOLED_SITE` / :data:`SELF_SITE`; ``policy``: ``"known"``
    (the requested site is in the bank) or the unseen-site policy applied; ``requested_site``:
    the site the caller asked for (``None`` if none).
    """

    array: npt.NDArray[np.float32]
    site_used: str
    policy: Policy
    requested_site: str | None


def check_policy(policy: object) -> str:
    """``policy`` if it is one of :data:`UNSEEN_POLICIES`, else :class:`UnknownChoiceError`."""
    if policy not in UNSEEN_POLICIES:
        raise UnknownChoiceError("unseen-site policy", policy, UNSEEN_POLICIES)
    return str(policy)


def _signature_distance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.abs(a - b)))


def signature_distances(
    normalizers: Mapping[str, SiteNormalizer], image: object, n_channels: int
) -> dict[str, float]:
    """Signature distance from ``image`` ``[C, ...]`` to each site's fitted normalizer.

    The distance is the mean absolute difference of the per-channel percentile signatures
    (``SiteNormalizer.signature``) in raw intensity units; ``ValueError`` when ``image`` does
    not have the ``n_channels`` channels the sites were fitted on.
    """
    signature = SiteNormalizer.signature(image)
    if signature.shape[0] != n_channels:
        raise ValueError(
            f"image has {signature.shape[0]} channel(s) but the bank's sites were fitted on "
            f"{n_channels}-channel images"
        )
    return {
        site: _signature_distance(signature, normalizer.signature_)
        for site, normalizer in normalizers.items()
    }


def nearest(distances: Mapping[str, float]) -> str:
    """The site of the smallest distance (the first on ties)."""
    return min(distances, key=lambda site: distances[site])


def degenerate_intensities(raw: npt.NDArray[np.float64], normalized: NormalizedImage) -> str | None:
    """Why ``raw`` or its normalization is (nearly) constant, or ``None``.

    An empty image, a constant image, or a normalized image that is constant although the raw
    one is not (its intensities lie where the normalizer clips everything to one value).
    """
    if raw.size == 0:
        return "empty image"
    if float(raw.max()) == float(raw.min()):
        return f"constant image (every value is {float(raw.min()):g})"
    out = np.asarray(normalized.array, dtype=np.float64)
    if float(out.std()) < 1e-6:
        return (
            "its intensities are outside what the site normalizer was fitted on: it maps "
            "the whole image to one value"
        )
    return None


def outside_fitted_range(
    raw: npt.NDArray[np.float64], fitted: SiteNormalizer, site_used: str
) -> str | None:
    """Why most of a channel of ``raw`` ``[C, ...]`` lies outside ``fitted``'s range, or ``None``.

    The range of a channel is the fitted images' 1st to 99th percentile
    (``fitted.signature_``), widened by that span on each side; more than half the values
    outside it is a problem. ``site_used`` names the normalizer in the message.
    """
    channels = raw.reshape(raw.shape[0], -1)
    for c, levels in enumerate(fitted.signature_):
        low, high = float(levels[0]), float(levels[-1])
        span = max(high - low, 1e-12)
        outside = float(np.mean((channels[c] < low - span) | (channels[c] > high + span)))
        if outside > 0.5:
            return (
                f"{outside:.0%} of channel {c}'s values lie outside the intensity range the "
                f"normalizer of {site_used!r} was fitted on "
                f"({low:g} to {high:g}, 1st to 99th percentile)"
            )
    return None
