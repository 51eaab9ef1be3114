"""Site-specific intensity normalization.

Every normalizer is fitted on ONE site's training images (channel-first ``[C, H, W]`` or
``[C, D, H, W]``), maps images to float32, and saves/loads as versioned JSON:

* :class:`ZScoreNormalizer` (``"zscore"``) - percentile clip, then z-score per channel;
* :class:`PercentileNormalizer` (``"percentile"``) - site percentiles ``[p_low, p_high]`` -> [0, 1];
* :class:`HistogramNormalizer` (``"histogram"``) - Nyúl & Udupa landmark standardization;
* :class:`ColourNormalizer` (``"colour"``, alias ``"color"``) - Reinhard colour transfer in
  L*a*b* onto a shared reference, for RGB.

:func:`make_normalizer` / :func:`load_normalizer` build and load by kind;
:class:`NormalizerBank` holds one normalizer per site plus a pooled one and applies an
unseen-site policy (``"nearest"``, ``"self"``, ``"pooled"``; :mod:`.unseen`). The contract every
kind follows is :class:`SiteNormalizer` (:mod:`.base`), with its input checks in :mod:`.checks`
and its JSON artifact in :mod:`.artifacts`.
"""

from sitefusion.normalization.bank import NormalizerBank
from sitefusion.normalization.base import SIGNATURE_LEVELS, FitAccumulator, SiteNormalizer
from sitefusion.normalization.colour import ColourNormalizer, lab_to_rgb, rgb_to_lab
from sitefusion.normalization.histogram import HistogramNormalizer
from sitefusion.normalization.percentile import PercentileNormalizer
from sitefusion.normalization.registry import (
    NORMALIZER_ALIASES,
    NORMALIZERS,
    canonical_kind,
    load_normalizer,
    make_normalizer,
)
from sitefusion.normalization.unseen import (
    POOLED_SITE,
    SELF_SITE,
    UNSEEN_POLICIES,
    NormalizedImage,
)
from sitefusion.normalization.zscore import ZScoreNormalizer

__all__ = [
    "NORMALIZERS",
    "NORMALIZER_ALIASES",
    "POOLED_SITE",
    "SELF_SITE",
    "SIGNATURE_LEVELS",
    "UNSEEN_POLICIES",
    "ColourNormalizer",
    "FitAccumulator",
    "HistogramNormalizer",
    "NormalizedImage",
    "NormalizerBank",
    "PercentileNormalizer",
    "SiteNormalizer",
    "ZScoreNormalizer",
    "canonical_kind",
    "lab_to_rgb",
    "load_normalizer",
    "make_normalizer",
    "rgb_to_lab",
]
