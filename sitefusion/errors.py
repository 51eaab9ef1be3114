"""Exception types of sitefusion.

Every error names what it is about (a file, a field, a column, a row), the offending value and
what was expected, so that a one-line CLI message is enough to fix the input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ArtifactError",
    "ConfigError",
    "FederationError",
    "ImageReadError",
    "ManifestError",
    "MissingDependencyError",
    "NotFittedError",
    "OutputFolderError",
    "SiteFusionError",
    "UnknownChoiceError",
    "did_you_mean",
]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SiteFusionError(Exception):
    """Base class of every error sitefusion raises on purpose."""


class ConfigError(SiteFusionError, ValueError):
    """A configuration file or override is invalid (unknown key, bad value, wrong type)."""


class UnknownChoiceError(SiteFusionError, ValueError):
    """A name is not one of the valid choices; the message lists them and suggests the nearest."""

    def __init__(self, what: str, value: object, choices: Iterable[str]) -> None:
        valid = sorted(str(c) for c in choices)
        self.what = what
        self.value = value
        self.choices = valid
        super().__init__(
            f"unknown {what} {value!r}; valid choices: {', '.join(valid)}"
            f"{did_you_mean(str(value), valid)}"
        )


class ImageReadError(SiteFusionError, OSError):
    """A file could not be read as an image. The message names the file and the cause."""

    def __init__(self, path: object, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")

    def __reduce__(
        self,
    ) -> tuple[type, tuple[str, str]]:  # keeps the error picklable across workers
        return (type(self), (self.path, self.cause))


class ManifestError(SiteFusionError, ValueError):
    """A manifest row or column is invalid (missing file, unknown label, empty site, duplicate id)."""


class MissingDependencyError(SiteFusionError, ImportError):
    """An optional package an option needs is not installed; the message names what to install."""


class NotFittedError(SiteFusionError, RuntimeError):
    """An estimator was used before ``fit``."""

    def __init__(self, obj: object) -> None:
        super().__init__(
            f"{type(obj).__name__} is not fitted yet; call fit(...) on one site's training images first"
        )


class ArtifactError(SiteFusionError, OSError):
    """A run-directory artifact is missing, of the wrong version, or fails its SHA-256 check."""


class OutputFolderError(SiteFusionError, OSError):
    """An output folder cannot be written: it is a file, lies under a file, is read-only or full."""


class FederationError(SiteFusionError):
    """A federated run cannot go on: sites missing past a deadline, a site's own error."""
