"""Registry of site-normalizer kinds: name -> class, construction and loading by name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sitefusion.errors import ArtifactError, UnknownChoiceError
from sitefusion.normalization.artifacts import read_json_artifact
from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.colour import ColourNormalizer
from sitefusion.normalization.histogram import HistogramNormalizer
from sitefusion.normalization.percentile import PercentileNormalizer
from sitefusion.normalization.zscore import ZScoreNormalizer

__all__ = [
    "NORMALIZERS",
    "NORMALIZER_ALIASES",
    "canonical_kind",
    "load_normalizer",
    "make_normalizer",
    "normalizer_class",
]

NORMALIZERS: Mapping[str, type[SiteNormalizer]] = MappingProxyType(
    {
        cls.kind: cls
        for cls in (ZScoreNormalizer, PercentileNormalizer, HistogramNormalizer, ColourNormalizer)
    }
)
"""Canonical kind -> normalizer class (read-only)."""

NORMALIZER_ALIASES: Mapping[str, str] = MappingProxyType({"color": "colour"})
"""Alternative spellings accepted wherever a kind is named -> canonical kind."""


def canonical_kind(kind: str) -> str:
    """Return the canonical kind for ``kind`` (or an alias of it).

    Raises :class:`UnknownChoiceError` listing the kinds with a "did you mean".
    """
    name = NORMALIZER_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if name not in NORMALIZERS:
        raise UnknownChoiceError("normalizer kind", kind, NORMALIZERS)
    return str(name)


def normalizer_class(kind: str) -> type[SiteNormalizer]:
    """The class registered for ``kind`` (aliases accepted)."""
    return NORMALIZERS[canonical_kind(kind)]


def make_normalizer(kind: str, **params: Any) -> SiteNormalizer:
    """Build an unfitted normalizer of ``kind`` with keyword hyper-parameters ``params``.

    Raises :class:`UnknownChoiceError` for an unknown kind, :class:`ConfigError` for a bad
    value, and :class:`ConfigError` naming the parameter for an unknown one.
    """
    cls = normalizer_class(kind)
    unknown = sorted(set(params) - set(cls._param_names()))
    if unknown:
        raise UnknownChoiceError(
            f"{cls.kind!r} normalizer parameter", unknown[0], cls._param_names()
        )
    return cls(**params)


def load_normalizer(path: str | os.PathLike[str]) -> SiteNormalizer:
    """Load a normalizer artifact of any registered kind, dispatching on its ``"kind"`` field.

    Raises :class:`ArtifactError` naming the file and field when it cannot be read, is of an
    unknown kind or version, or its content is inconsistent.
    """
    payload = read_json_artifact(path, "normalizer artifact")
    if "kind" not in payload:
        raise ArtifactError(f"{path}: field 'kind': missing from the normalizer artifact")
    kind = payload["kind"]
    if not isinstance(kind, str) or kind not in NORMALIZERS:
        raise ArtifactError(
            f"{path}: field 'kind': {kind!r} is not a normalizer kind; valid kinds: "
            f"{', '.join(sorted(NORMALIZERS))}"
        )
    return NORMALIZERS[kind].from_dict(payload, source=path)
