"""Read one DICOM file (single- or multi-frame) with pydicom.

Conventions of the returned array (``[C, H, W]``, or ``[C, F, H, W]`` for multi-frame files):

* Rescale Slope/Intercept (or a Modality LUT) is applied, per frame when an enhanced
  multi-frame file gives per-frame values, so CT comes out in Hounsfield units.
* MONOCHROME1 is inverted so that brighter always means higher: ``v' = t(lo) + t(hi) - v``,
  where ``lo``/``hi`` is the stored-value range (Bits Stored, Pixel Representation) and ``t``
  the modality transform. The file's own value stays in ``metadata["photometric_interpretation"]``.
* Colour comes out as RGB (``C == 3``): YCbCr is converted, PALETTE COLOR is expanded through
  its lookup table, Planar Configuration is undone by pydicom.
* Frames of a multi-frame file keep their stored order as the depth axis.

Why this module is long: reading a DICOM file correctly is most of it — transfer syntaxes,
rescale, MONOCHROME1, colour spaces, multi-frame files, truncation, the size check before
decoding — each with an error that names the file.
"""

from __future__ import annotations

import math
import os
import statistics
import struct
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError
from sitefusion.io.deflated import is_deflated, read_deflated
from sitefusion.io.files import MAX_ELEMENTS, check_size
from sitefusion.io.formats import has_dicom_preamble, require_file
from sitefusion.io.types import ImageData, build_image

__all__ = ["decode_dicom_pixels", "dicom_metadata", "read_dicom", "read_dicom_dataset"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Copied to metadata as they are. Patient identifiers (PatientName, PatientID,
# PatientBirthDate, ...) are deliberately absent: metadata ends up in logs and reports.
_COPIED_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "InstitutionName",
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
)
_REQUIRED_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
)
_INTEGER_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)
_TRAILING_PADDING = 0xFFFCFFFC
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_YBR_CONVERTIBLE = ("YBR_FULL", "YBR_FULL_422")
# (implicit VR, little endian) -> uncompressed transfer syntax, for files without file meta.
_NATIVE_SYNTAX = {
    (True, True): "1.2.840.10008.1.2",
    (False, True): "1.2.840.10008.1.2.1",
    (False, False): "1.2.840.10008.1.2.2",
}


def read_dicom_dataset(
    path: str | os.PathLike[str],
    *,
    stop_before_pixels: bool = False,
    max_elements: int = MAX_ELEMENTS,
) -> Any:
    """Parse a DICOM file into a ``pydicom.Dataset``.

    Files without the ``DICM`` preamble are parsed with ``force=True`` and accepted only if they
    hold a DICOM image header (SOP Class UID, or Rows and Columns). A deflated file is inflated
    within a bound (:mod:`sitefusion.io.deflated`): for a whole read, its header's image must
    pass :func:`~sitefusion.io.files.check_size` with ``max_elements`` first.

    Raises:
        ImageReadError: missing/empty file, "not an image: not a DICOM file ...",
            "DICOM file is truncated" or "invalid DICOM header: ...".
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = require_file(path)
    preamble = has_dicom_preamble(p)

    def pixel_bytes(header: Any) -> int:
        shape = claimed_shape(header)
        check_size(p, shape, max_elements)
        return math.prod(shape) * _bytes_per_sample(header)

    try:
        if is_deflated(p):
            ds = read_deflated(p, stop_before_pixels=stop_before_pixels, pixel_bytes=pixel_bytes)
        else:
            ds = pydicom.dcmread(p, force=not preamble, stop_before_pixels=stop_before_pixels)
    except ImageReadError:
        raise
    except InvalidDicomError as err:
        raise ImageReadError(p, f"not an image: not a DICOM file ({err})") from err
    except (EOFError, struct.error) as err:  # struct.error: an element header cut short
        raise ImageReadError(p, "DICOM file is truncated (ends inside the header)") from err
    except Exception as err:  # pydicom raises struct.error, ValueError, ... on bad headers
        raise ImageReadError(p, f"invalid DICOM header: {type(err).__name__}: {err}") from err
    if not preamble and not (
        "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds) or "PixelData" in ds
    ):
        raise ImageReadError(
            p, "not an image: not a DICOM file (no 'DICM' preamble and no DICOM image header)"
        )
    if preamble and not len(ds):
        # pydicom discards the whole data set when it meets the end of the file inside an
        # undefined-length element (e.g. compressed pixel data), keeping only the file meta.
        where = "file meta information" if len(getattr(ds, "file_meta", ())) else "preamble"
        raise ImageReadError(p, f"DICOM file is truncated (no data set after the {where})")
    short = _truncated_element(ds)
    if short is not None:
        raise ImageReadError(p, f"DICOM file is truncated (ends inside element {short})")
    return ds


def _truncated_element(ds: Any) -> str | None:
    """Name the last element if the file ended inside its value.

    pydicom silently returns a short value when a file ends early, so compare the bytes read
    with the length the element header declared. Cut trailing padding is harmless: ignored.
    """
    from pydicom.datadict import keyword_for_tag

    if not len(ds):
        return None
    tag = list(ds.keys())[-1]
    if tag == _TRAILING_PADDING:
        return None
    element = ds.get_item(tag)
    length = getattr(element, "length", None)
    value = getattr(element, "value", None)
    if not isinstance(value, (bytes, bytearray)) or length is None or length == 0xFFFFFFFF:
        return None
    if len(value) >= length:
        return None
    keyword = keyword_for_tag(tag)
    return f"{tag}{' ' + keyword if keyword else ''}: {len(value)} of {length} bytes"


def read_dicom(path: str | os.PathLike[str], *, max_elements: int = MAX_ELEMENTS) -> ImageData:
    """Read one DICOM file.

    Returns:
        ``ImageData`` with ``array`` ``[C, H, W]`` for a single frame or ``[C, F, H, W]`` for a
        multi-frame file (``C`` = 1 grey, 3 RGB); ``metadata["format"] == "dicom"``. See the
        module docstring for rescaling, MONOCHROME1 and colour handling.

    Raises:
        ImageReadError: for every failure ("DICOM has no pixel data", "unsupported transfer
            syntax ...", "DICOM file is truncated", "image contains NaN or infinite values"...).
    """
    p = require_file(path)
    ds = read_dicom_dataset(p, max_elements=max_elements)
    check_size(p, claimed_shape(ds), max_elements)
    pixels = decode_dicom_pixels(ds, p)
    array = pixels[:, 0] if pixels.shape[1] == 1 else pixels
    metadata = dicom_metadata(ds, p)
    metadata["num_frames"] = int(pixels.shape[1])
    spacing = _in_plane_spacing(ds)
    if spacing is not None and array.ndim == 4:
        depth = _frame_spacing(ds)
        spacing = None if depth is None else [depth, *spacing]
    metadata["spacing"] = spacing
    return build_image(p, array, metadata)


def claimed_shape(ds: Any) -> tuple[int, ...]:
    """``(frames, rows, columns, samples)`` as the header states them (1 where absent)."""

    def number(keyword: str) -> int:
        try:
            return int(ds.get(keyword) or 1)
        except (TypeError, ValueError):
            return 1

    return tuple(number(k) for k in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel"))


def _bytes_per_sample(ds: Any) -> int:
    """Bytes one stored value takes (Bits Allocated, rounded up; 8 when absent or invalid)."""
    try:
        bits = int(ds.get("BitsAllocated") or 64)
    except (TypeError, ValueError):
        bits = 64
    return max(1, min(bits, 64) + 7) // 8


def dicom_metadata(ds: Any, path: Path) -> dict[str, Any]:
    """JSON-safe metadata of a dataset: path, format, modality, UIDs, equipment.

    Never copies patient identifiers. ``SOPInstanceUIDs`` is a one-element list here; a series
    reader replaces it with the sorted slices' UIDs.
    """
    meta: dict[str, Any] = {"path": str(path), "format": "dicom"}
    meta["modality"] = _text(ds, "Modality")
    meta["photometric_interpretation"] = _text(ds, "PhotometricInterpretation")
    for keyword in _COPIED_KEYWORDS:
        meta[keyword] = _text(ds, keyword)
    sop = _text(ds, "SOPInstanceUID")
    meta["SOPInstanceUIDs"] = [sop] if sop is not None else None
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        meta["TransferSyntaxUID"] = _text(file_meta, "TransferSyntaxUID")
    return meta


def _text(ds: Any, keyword: str) -> str | None:
    """A single-valued text element as ``str``; ``None`` when absent, empty or unreadable."""
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value fails on access; metadata is best effort
        return None
    text = str(value).strip() if isinstance(value, str) else None
    return text or None


def decode_dicom_pixels(ds: Any, path: Path) -> np.ndarray:
    """Decode, rescale and colour-convert a dataset's pixels.

    Returns:
        float64 ``[C, F, H, W]`` (``F == 1`` for single-frame files).

    Raises:
        ImageReadError: no pixel data, incomplete pixel module, unsupported transfer syntax,
            truncated or undecodable pixel data, unsupported photometric interpretation.
    """
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        hint = ""
        if "Rows" in ds and "Columns" in ds:
            # an image header without pixels: most likely a file cut just before Pixel Data
            hint = (
                f"; the header describes a {ds.Rows}x{ds.Columns} image, so the file is "
                "probably truncated"
            )
        raise ImageReadError(path, f"DICOM has no pixel data ({_describe_sop(ds)}){hint}")
    missing = [k for k in _REQUIRED_PIXEL_KEYWORDS if k not in ds]
    if "PixelData" in ds:
        missing += [k for k in ("BitsStored", "PixelRepresentation") if k not in ds]
    if missing:
        raise ImageReadError(
            path, f"DICOM pixel description is incomplete: missing {', '.join(missing)}"
        )
    for keyword in _INTEGER_PIXEL_KEYWORDS:
        if keyword in ds:
            value = ds[keyword].value
            try:
                int(value)
            except (TypeError, ValueError) as err:
                raise ImageReadError(
                    path, f"invalid DICOM {keyword} {value!r}: expected an integer"
                ) from err
    try:
        raw, info = _decode(ds, path)
        frames = int(info["number_of_frames"])
        samples = int(info["samples_per_pixel"])
        photometric = str(info["photometric_interpretation"])
        # Canonical [F, H, W, S] whatever pydicom squeezed.
        arr = raw.reshape(frames, int(info["rows"]), int(info["columns"]), samples)
        arr = _to_display_space(arr, ds, photometric, path)
    except ImageReadError:
        raise
    except Exception as err:  # bad LUTs, bad element values (e.g. an IS of '1A')
        raise ImageReadError(
            path, f"invalid DICOM pixel description: {type(err).__name__}: {err}"
        ) from err
    return np.ascontiguousarray(arr.transpose(3, 0, 1, 2))


def _describe_sop(ds: Any) -> str:
    file_meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (
        file_meta.get("MediaStorageSOPClassUID") if file_meta is not None else None
    )
    name = getattr(sop_class, "name", None) or (str(sop_class) if sop_class else None)
    modality = ds.get("Modality")
    parts = [str(x) for x in (name, f"modality {modality}" if modality else None) if x]
    return ", ".join(parts) if parts else "no SOP class or modality either"


def _transfer_syntax(ds: Any, path: Path) -> Any:
    """The dataset's transfer syntax; inferred from how the header parsed if file meta lacks it."""
    from pydicom.uid import UID

    file_meta = ds.file_meta
    uid = file_meta.get("TransferSyntaxUID")
    if uid:
        return UID(str(uid))
    pixel_element = next(ds[k] for k in _PIXEL_KEYWORDS if k in ds)
    encoding = tuple(getattr(ds, "original_encoding", (None, None)))
    inferred = _NATIVE_SYNTAX.get(encoding)  # type: ignore[arg-type]
    if pixel_element.is_undefined_length or inferred is None:
        raise ImageReadError(
            path,
            "DICOM has no Transfer Syntax UID (0002,0010) and its pixel encoding cannot be "
            "inferred",
        )
    # No file meta but native pixel data: the encoding pydicom parsed the header with is
    # the encoding of the pixel data too.
    file_meta.TransferSyntaxUID = UID(inferred)
    return file_meta.TransferSyntaxUID


def _decode(ds: Any, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from pydicom.pixels import as_pixel_options, get_decoder

    uid = _transfer_syntax(ds, path)
    label = f"{uid.name} ({uid})"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as err:
        raise ImageReadError(
            path, f"unsupported transfer syntax {label}: pydicom has no decoder for it"
        ) from err
    if not decoder.is_available:
        raise ImageReadError(
            path,
            f"unsupported transfer syntax {label}: no decoder installed; install one of: "
            + "; ".join(decoder.missing_dependencies),
        )
    try:
        arr, info = decoder.as_array(ds, validate=True, raw=False, **as_pixel_options(ds))
    except ValueError as err:
        if "less than expected" in str(err) or "truncated" in str(err).lower():
            raise ImageReadError(
                path, f"DICOM file is truncated: {str(err).split(' - ')[0]}"
            ) from err
        raise ImageReadError(path, f"invalid DICOM pixel data: {err}") from err
    except RuntimeError as err:
        # pydicom: "Unable to decode as exceptions were raised by all available plugins:
        #   pillow: <reason>" -- unsupported variant (e.g. 12-bit JPEG) or corrupt stream.
        reasons = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip())
        hint = ""
        if decoder.missing_dependencies:
            hint = "; a decoder that is not installed may read it: " + "; ".join(
                decoder.missing_dependencies
            )
        raise ImageReadError(
            path,
            f"cannot decode {label} pixel data (unsupported variant or corrupt data): "
            f"{reasons or err}{hint}",
        ) from err
    return arr, info


def _to_display_space(arr: np.ndarray, ds: Any, photometric: str, path: Path) -> np.ndarray:
    """``[F, H, W, S]`` decoded values -> float64 RGB, or grey where brighter = higher."""
    from pydicom.pixels import apply_color_lut, convert_color_space

    if photometric in _MONOCHROME and arr.shape[-1] == 1:
        return _monochrome(arr, ds, photometric)
    if photometric == "RGB" and arr.shape[-1] == 3:
        return arr.astype(np.float64)
    if photometric in _YBR_CONVERTIBLE and arr.shape[-1] == 3:
        return np.asarray(convert_color_space(arr, photometric, "RGB"), dtype=np.float64)
    if photometric == "PALETTE COLOR" and arr.shape[-1] == 1:
        return np.asarray(apply_color_lut(arr[..., 0], ds), dtype=np.float64).reshape(
            (*arr.shape[:3], 3)
        )
    raise ImageReadError(
        path,
        f"unsupported photometric interpretation {photometric} with "
        f"{arr.shape[-1]} sample(s) per pixel",
    )


def _monochrome(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    stored = arr.astype(np.float64)
    if "PixelData" in ds:
        bits = int(ds.BitsStored)
        signed = int(ds.PixelRepresentation) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    else:  # float pixel data has no stored-value range
        lo, hi = float(np.min(stored)), float(np.max(stored))
    if ds.get("ModalityLUTSequence"):
        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        ends = np.asarray(apply_modality_lut(np.array([lo, hi], dtype=arr.dtype), ds), float)
        return float(ends.sum()) - out if photometric == "MONOCHROME1" else out
    out = np.empty_like(stored)
    for index, (slope, intercept) in enumerate(_rescale_per_frame(ds, arr.shape[0])):
        out[index] = stored[index] * slope + intercept
        if photometric == "MONOCHROME1":
            out[index] = slope * (lo + hi) + 2 * intercept - out[index]
    return out


def _rescale_per_frame(ds: Any, frames: int) -> list[tuple[float, float]]:
    """(slope, intercept) for each frame: per-frame groups, then shared groups, then top level."""

    def from_item(item: Any) -> tuple[float, float] | None:
        seq = item.get("PixelValueTransformationSequence") if item is not None else None
        source = seq[0] if seq else item
        if source is None:
            return None
        slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
        if slope is None and intercept is None:  # absent, or present but empty
            return None
        return (
            1.0 if slope is None else float(slope),
            0.0 if intercept is None else float(intercept),
        )

    default = from_item(ds) or (1.0, 0.0)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = from_item(shared_seq[0]) if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    result = []
    for index in range(frames):
        item = per_frame[index] if per_frame and index < len(per_frame) else None
        frame_value = None
        if item is not None and item.get("PixelValueTransformationSequence"):
            frame_value = from_item(item)
        result.append(frame_value or shared or default)
    return result


def _positive(values: Any, count: int) -> list[float] | None:
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(floats) != count or not all(np.isfinite(v) and v > 0 for v in floats):
        return None
    return floats


def _shared_pixel_measures(ds: Any) -> Any:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get("PixelMeasuresSequence"):
        return shared[0].PixelMeasuresSequence[0]
    return None


def _in_plane_spacing(ds: Any) -> list[float] | None:
    """``[row spacing, column spacing]`` in mm (PixelSpacing, else ImagerPixelSpacing)."""
    measures = _shared_pixel_measures(ds)
    for source in (ds, measures):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            if keyword in source:
                spacing = _positive(source.get(keyword), 2)
                if spacing is not None:
                    return spacing
    return None


def _frame_spacing(ds: Any) -> float | None:
    """Distance between frames of a multi-frame file, when the header states it."""
    measures = _shared_pixel_measures(ds)
    for source in (ds, measures):
        if source is not None and "SpacingBetweenSlices" in source:
            value = _positive([source.get("SpacingBetweenSlices")], 1)
            if value is not None:
                return value[0]
    offsets = ds.get("GridFrameOffsetVector")  # RT Dose
    if offsets is not None and len(offsets) > 1:
        steps = np.abs(np.diff(np.asarray([float(v) for v in offsets])))
        if steps.size and np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-3):
            return float(statistics.median(steps.tolist()))
    return None
