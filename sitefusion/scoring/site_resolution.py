"""Which site an image to score comes from: the ``--site`` flag, a DICOM tag, or nobody knows.

Order: the flag wins; otherwise the run's ``scoring.site_map`` is looked up with the image's
``InstitutionName``, then ``StationName``, then the combined key
``"Manufacturer ManufacturerModelName"`` (the two values joined by one space); otherwise the site
is unknown and the run's unseen-site policy picks the normalizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sitefusion.errors import UnknownChoiceError

__all__ = [
    "COMBINED_EQUIPMENT_TAG",
    "SITE_TAGS",
    "SiteResolution",
    "check_site_flag",
    "check_site_map",
    "resolve_site",
]

COMBINED_EQUIPMENT_TAG = "Manufacturer ManufacturerModelName"
"""The ``site_map`` key whose values are ``"<Manufacturer> <ManufacturerModelName>"``."""

SITE_TAGS: tuple[str, ...] = ("InstitutionName", "StationName", COMBINED_EQUIPMENT_TAG)
"""DICOM tags tried, in this order, to find an image's site in ``scoring.site_map``."""

UNSEEN_SOURCE = "unseen-policy"
FLAG_SOURCE = "flag"


@dataclass(frozen=True)
class SiteResolution:
    """The site asked for (``None``: unknown) and how it was found.

    ``source`` is ``"flag"``, ``"tag:<TagName>"`` (e.g. ``"tag:InstitutionName"``) or
    ``"unseen-policy"``.
    """

    site: str | None
    source: str


def check_site_map(site_map: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse ``site_map`` keys that are not one of :data:`SITE_TAGS`.

    Raises:
        UnknownChoiceError: naming the key, the valid tags and the nearest one.
    """
    for tag in site_map:
        if tag not in SITE_TAGS:
            raise UnknownChoiceError("scoring.site_map tag", tag, SITE_TAGS)


def check_site_flag(site: str | None, known_sites: tuple[str, ...]) -> None:
    """Refuse a ``--site`` that is not one of the run's sites (most likely a typo).

    To score images of a new site, leave the flag out: the unseen-site policy then applies.

    Raises:
        UnknownChoiceError: listing the run's sites and the nearest one.
    """
    if site is not None and site not in known_sites:
        raise UnknownChoiceError("site", site, known_sites)


def _tag_value(metadata: Mapping[str, Any], tag: str) -> str | None:
    if tag == COMBINED_EQUIPMENT_TAG:
        parts = [_tag_value(metadata, t) for t in ("Manufacturer", "ManufacturerModelName")]
        return " ".join(p for p in parts if p) if all(parts) else None
    value = metadata.get(tag)
    return (value.strip() or None) if isinstance(value, str) else None


def resolve_site(
    metadata: Mapping[str, Any],
    *,
    flag: str | None = None,
    site_map: Mapping[str, Mapping[str, str]] | None = None,
) -> SiteResolution:
    """Resolve one image's site.

    Args:
        metadata: the image's :class:`~sitefusion.io.ImageData` metadata (DICOM equipment fields
            such as ``InstitutionName``; other formats have none).
        flag: the ``--site`` value, if given; it wins.
        site_map: ``{TagName: {value as written: site}}`` (the run's ``scoring.site_map``).
            Values are compared after stripping surrounding blanks (DICOM pads strings).

    Returns:
        ``SiteResolution(site, source)``; ``site`` is ``None`` with source ``"unseen-policy"``
        when neither the flag nor a tag decides.
    """
    if flag is not None:
        return SiteResolution(flag, FLAG_SOURCE)
    for tag in SITE_TAGS:
        table = (site_map or {}).get(tag)
        if not table:
            continue
        value = _tag_value(metadata, tag)
        if value is None:
            continue
        lookup = {str(k).strip(): v for k, v in table.items()}
        if value in lookup:
            return SiteResolution(lookup[value], f"tag:{tag}")
    return SiteResolution(None, UNSEEN_SOURCE)
