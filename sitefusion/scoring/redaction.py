"""Keep patient identifiers out of every score, file name and message.

The readers never copy PatientName/PatientID into metadata, but an export may still carry them in
a *path* (a folder per patient is common) or a library error may quote a header value. Scoring
therefore collects the identifiers of each DICOM header it parses (in memory only) and replaces
them in the free-text fields of every row of the batch (``input``, ``error``) and in file names
derived from them, whatever the item's format: a photo or a note in the patient's folder
carries the name too. The cost: a short name part such as "Test" also hides that whole token
in other paths of the batch ("[redacted]_files"); docs/architecture.md says why that is the
right side to err on. UIDs are left alone: they are not patient identifiers, and a short ID
could match inside one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PATIENT_KEYWORDS",
    "REPLACEMENT",
    "Redactor",
    "birth_date_spellings",
    "patient_identifiers",
]

PATIENT_KEYWORDS: tuple[str, ...] = ("PatientName", "PatientID", "OtherPatientIDs")
"""Header elements whose values are collected and redacted (and PatientBirthDate, in the
spellings of :func:`birth_date_spellings`)."""

REPLACEMENT = "[redacted]"
"""What an identifier is replaced with."""

# Identifiers at least this long are redacted inside longer words too.
SUBSTRING_LENGTH = 6
# Values shorter than this are not redacted: "1" or "AB" would shred ordinary text.
MIN_LENGTH = 3


def patient_identifiers(ds: Any) -> set[str]:
    """Identifier strings of one pydicom dataset: the whole values and the name components.

    ``DOE^JOHN`` yields ``"DOE^JOHN"``, ``"DOE JOHN"``, ``"DOE"`` and ``"JOHN"``, so the name is
    caught however an export spelled it into a folder name.
    """
    found: set[str] = set()
    for keyword in PATIENT_KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed value fails on access: nothing to collect
            continue
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) or _is_multi(value) else [value]
        for v in values:
            text = str(v).strip()
            if not text:
                continue
            found.add(text)
            parts = [p.strip() for p in text.replace("=", "^").split("^") if p.strip()]
            if len(parts) > 1:
                found.add(" ".join(parts))
                found.add("_".join(parts))
                found.update(parts)
    found.update(birth_date_spellings(ds))
    return {s for s in found if len(s) >= MIN_LENGTH}


def birth_date_spellings(ds: Any) -> set[str]:
    """The patient's date of birth (DICOM ``YYYYMMDD``) in the spellings exports put into folder
    and file names: ISO with ``-``, ``.``, ``_`` or none, day first and month first with ``.``,
    ``-``, ``/`` and ``_``. An invalid or partial date yields what can be spelled of it."""
    try:
        raw = str(ds.get("PatientBirthDate") or "").strip()
    except Exception:  # a malformed value fails on access: nothing to collect
        return set()
    if len(raw) != 8 or not raw.isdigit():
        return {raw} if len(raw) >= SUBSTRING_LENGTH else set()
    y, m, d = raw[:4], raw[4:6], raw[6:]
    spellings = {raw}
    for sep in ("-", ".", "_", "/", ""):
        spellings |= {f"{y}{sep}{m}{sep}{d}", f"{d}{sep}{m}{sep}{y}", f"{m}{sep}{d}{sep}{y}"}
    return spellings


_PREFIX = MIN_LENGTH


@functools.lru_cache(maxsize=8)
def _index(identifiers: frozenset[str]) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Identifiers by the first characters of their lower-case form, and the few too short
    to index. A batch redacts every row with the identifiers of all its headers (thousands
    for a department's night): only those whose first characters occur in a text are tested
    against it. Cached per set: a batch shares one set among its items."""
    grouped: dict[str, list[str]] = {}
    short = []
    for v in identifiers:
        low = v.lower()
        if len(low) < _PREFIX:
            short.append(v)
        else:
            grouped.setdefault(low[:_PREFIX], []).append(v)
    return {k: tuple(vs) for k, vs in grouped.items()}, tuple(short)


def _is_multi(value: Any) -> bool:
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue)


@dataclass(frozen=True)
class Redactor:
    """Replaces known patient identifiers in text with :data:`REPLACEMENT`.

    The identifiers never appear in ``repr`` (a dataclass repr could end up in a log).
    """

    identifiers: frozenset[str] = field(default_factory=frozenset, repr=False)

    @classmethod
    def from_values(cls, values: Iterable[str]) -> Redactor:
        """A redactor for these identifier strings (shorter than 3 characters are ignored)."""
        return cls(frozenset(v for v in values if len(v) >= MIN_LENGTH))

    def __call__(self, text: str) -> str:
        """``text`` with every identifier replaced: whole tokens, case-insensitive, longest
        first."""
        if not self.identifiers or not text:
            return text
        lowered = text.lower()
        by_prefix, short = _index(self.identifiers)
        candidates = set(short)
        for i in range(len(lowered) - _PREFIX + 1):
            candidates.update(by_prefix.get(lowered[i : i + _PREFIX], ()))
        hits = sorted((v for v in candidates if v.lower() in lowered), key=len, reverse=True)
        if not hits:
            return text
        # One pass, longest first, so a replacement is never matched again. Identifiers of at
        # least SUBSTRING_LENGTH characters match anywhere ("xPID12345"); shorter ones only as
        # whole tokens, so a name part "pre" leaves "preamble" alone while "DOE" in
        # "/exports/DOE_JOHN/" is caught.
        alternatives = "|".join(
            re.escape(v)
            if len(v) >= SUBSTRING_LENGTH
            else rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])"
            for v in hits
        )
        pattern = re.compile(alternatives, re.IGNORECASE)
        return pattern.sub(REPLACEMENT, text)
