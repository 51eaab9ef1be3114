"""Recognise what kind of image a file holds, from its bytes first and its name second."""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from pathlib import Path
from typing import Literal

from sitefusion.errors import ImageReadError
from sitefusion.io.deflated import is_deflated, read_deflated

__all__ = [
    "NIFTI_SUFFIXES",
    "RASTER_SUFFIXES",
    "Format",
    "detect_format",
    "has_dicom_preamble",
    "nifti_magic",
    "parses_as_dicom",
    "require_file",
]

Format = Literal["dicom", "nifti", "raster"]
"""What :func:`detect_format` recognises; ``read_image`` picks the reader from it."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GZIP_MAGIC = b"\x1f\x8b"
# Formats we recognise only to say clearly that they are not supported.
_UNSUPPORTED_MAGIC = (
    (b"CDF\x01", "MINC-1 / NetCDF"),
    (b"CDF\x02", "MINC-1 / NetCDF"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 (e.g. MINC-2)"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"%PDF", "PDF document"),
)


def require_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a :class:`Path` if it is a non-empty regular file.

    Raises:
        ImageReadError: "file does not exist", "not a regular file", "empty file (0 bytes)" or
            "cannot open file: ...".
    """
    p = Path(path)
    try:
        if not p.exists():
            raise ImageReadError(p, "file does not exist")
        if not p.is_file():
            raise ImageReadError(p, "not a regular file")
        if p.stat().st_size == 0:
            raise ImageReadError(p, "empty file (0 bytes)")
    except OSError as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(p, f"cannot open file: {err.strerror or err}") from err
    return p


def _head(path: Path, size: int = 1024) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as err:
        raise ImageReadError(path, f"cannot open file: {err.strerror or err}") from err


def has_dicom_preamble(path: Path, head: bytes | None = None) -> bool:
    """True when bytes 128-131 are ``b"DICM"`` (a DICOM Part 10 file)."""
    data = _head(path, 132) if head is None else head
    return data[128:132] == b"DICM"


def nifti_magic(path: Path, head: bytes | None = None) -> str | None:
    """Return ``"nifti1"``/``"nifti2"`` when the (possibly gzipped) header has a NIfTI magic.

    NIfTI-1 stores ``n+1``/``ni1`` at byte 344, NIfTI-2 stores ``n+2``/``ni2`` at byte 4.
    """
    data = _head(path, 540) if head is None else head
    if data.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as fh:
                data = fh.read(540)
        except (OSError, EOFError, zlib.error):
            return None
    if data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti1"
    if data[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti2"
    return None


def parses_as_dicom(path: Path) -> bool:
    """True when pydicom can read a DICOM header from a file that lacks the ``DICM`` preamble.

    ``force=True`` makes pydicom "parse" almost any bytes, so the result must also hold an
    element that every image instance has (SOP Class UID, or Rows and Columns).
    """
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if is_deflated(path):  # pydicom would inflate its whole data set
                ds = read_deflated(path, stop_before_pixels=True)
            else:
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            return "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception:  # any parse failure just means "not DICOM"
        return False


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _pillow_identifies(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # Pillow raises many types for "not my format"
        return False


def detect_format(path: str | os.PathLike[str]) -> Format:
    """Say which reader handles ``path``: ``"dicom"``, ``"nifti"`` or ``"raster"`` (Pillow).

    Order: DICOM preamble, NIfTI magic, PNG/JPEG magic, then the suffix (``.dcm``, ``.nii``,
    ``.nii.gz``, raster suffixes), then pydicom parsing a preamble-less header, then Pillow.

    Raises:
        ImageReadError: missing/empty file, or "not an image: ..." naming the format if known.
    """
    p = require_file(path)
    head = _head(p)
    if has_dicom_preamble(p, head):
        return "dicom"
    if nifti_magic(p, head) is not None:
        return "nifti"
    if head.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        return "raster"
    if _has_suffix(p, (".dcm", ".dicom")):
        return "dicom"
    if _has_suffix(p, NIFTI_SUFFIXES):
        return "nifti"
    if _has_suffix(p, RASTER_SUFFIXES):
        return "raster"
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise ImageReadError(p, f"not an image: {name} files are not supported")
    if head.startswith(_GZIP_MAGIC):
        raise ImageReadError(p, "not an image: gzip-compressed file that is not NIfTI")
    if parses_as_dicom(p):
        return "dicom"
    if _pillow_identifies(p):
        return "raster"
    raise ImageReadError(
        p, "not an image: unrecognised format (not DICOM, NIfTI, or a raster format Pillow reads)"
    )
