"""``read_image``: pick the reader for a path and guarantee that only ``ImageReadError`` leaves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sitefusion.errors import ImageReadError
from sitefusion.io.dicom import read_dicom
from sitefusion.io.dicom_series import read_dicom_series
from sitefusion.io.files import MAX_ELEMENTS
from sitefusion.io.formats import detect_format
from sitefusion.io.nifti import read_nifti
from sitefusion.io.raster import read_raster
from sitefusion.io.types import ImageData

__all__ = ["read_image"]


def read_image(
    path: str | os.PathLike[str],
    *,
    max_elements: int = MAX_ELEMENTS,
    on_raster_header: Callable[[int], None] | None = None,
) -> ImageData:
    """Read a DICOM file, a DICOM series folder, a NIfTI file or a raster image.

    A folder is read as one DICOM series (:func:`~sitefusion.io.read_dicom_series`); a file's
    format is recognised by :func:`~sitefusion.io.detect_format` (bytes first, then suffix).

    Returns:
        ``ImageData``: float32 ``array`` ``[C, H, W]`` or ``[C, D, H, W]`` plus JSON-safe
        ``metadata`` (never patient identifiers). An image whose header describes more than
        ``max_elements`` values is refused before it is decoded. ``on_raster_header``: see
        :func:`~sitefusion.io.raster.read_raster` (``on_header``; rasters only).

    Raises:
        ImageReadError: for every failure, with the path and a one-line cause; the underlying
            exception, if any, is chained as ``__cause__``.
    """
    p = Path(path)
    try:
        if p.is_dir():
            return read_dicom_series(p, max_elements=max_elements)
        kind = detect_format(p)
        if kind == "dicom":
            return read_dicom(p, max_elements=max_elements)
        if kind == "nifti":
            return read_nifti(p, max_elements=max_elements)
        return read_raster(p, max_elements=max_elements, on_header=on_raster_header)
    except ImageReadError:
        raise
    except Exception as err:  # last line of defence: a reader let a library error through
        raise ImageReadError(
            p, f"unexpected error while reading: {type(err).__name__}: {err}"
        ) from err
