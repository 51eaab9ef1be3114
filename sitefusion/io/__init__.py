"""Image readers: a path in, a channel-first float32 array plus JSON-safe metadata out.

``read_image`` handles DICOM files, DICOM series folders, NIfTI and Pillow raster images and
raises only :class:`sitefusion.errors.ImageReadError`.
"""

from sitefusion.io.dicom import read_dicom
from sitefusion.io.dicom_series import find_dicom_series, read_dicom_series
from sitefusion.io.dispatch import read_image
from sitefusion.io.files import not_a_file
from sitefusion.io.formats import Format, detect_format
from sitefusion.io.nifti import read_nifti
from sitefusion.io.raster import read_raster
from sitefusion.io.types import ImageData

__all__ = [
    "Format",
    "ImageData",
    "detect_format",
    "find_dicom_series",
    "not_a_file",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "read_raster",
]
