"""Group DICOM files into series and stack one series into a volume."""

from __future__ import annotations

import os
import statistics
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError
from sitefusion.io.dicom import (
    claimed_shape,
    decode_dicom_pixels,
    dicom_metadata,
    read_dicom,
    read_dicom_dataset,
)
from sitefusion.io.files import MAX_ELEMENTS, check_size
from sitefusion.io.formats import has_dicom_preamble
from sitefusion.io.types import ImageData, build_image

__all__ = ["find_dicom_series", "read_dicom_series"]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
# Series UIDs named in the "several series" error before "and N more".
_LISTED_SERIES = 3
# Two slice positions closer than this (mm) are "the same position".
_POSITION_TOLERANCE_MM = 1e-3
# Relative deviation of one slice step from the median step still called uniform.
_SPACING_TOLERANCE = 0.01
# Orientation cosines may differ by this much between slices of one stack.
_ORIENTATION_TOLERANCE = 1e-3


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        else:
            files.append(p)
    return files


def _group(files: list[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Series UID -> files, plus the files left out (unreadable, not DICOM, no series UID)."""
    series: dict[str, list[Path]] = {}
    skipped: list[Path] = []
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = read_dicom_dataset(path, stop_before_pixels=True)
        except ImageReadError:
            skipped.append(path)
            continue
        uid = ds.get("SeriesInstanceUID")
        if uid:
            series.setdefault(str(uid), []).append(path)
        else:
            skipped.append(path)
    return series, skipped


def find_dicom_series(paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[Path]]:
    """Group DICOM files by SeriesInstanceUID, reading headers only.

    Args:
        paths: files; a folder stands for every file below it (recursively, sorted by path).

    Returns:
        ``{SeriesInstanceUID: [files in input order]}`` in order of first appearance. Files
        that are not DICOM, cannot be parsed or have no SeriesInstanceUID (e.g. a DICOMDIR) are
        skipped silently: reporting them is the caller's job.
    """
    return _group(_expand(paths))[0]


def read_dicom_series(
    files_or_folder: str | os.PathLike[str] | Iterable[Path], *, max_elements: int = MAX_ELEMENTS
) -> ImageData:
    """Read one DICOM series as a volume.

    Slices are sorted by their position along the slice normal (ImagePositionPatient projected
    on the cross product of the ImageOrientationPatient cosines), or by InstanceNumber when
    positions are missing. Rescale is applied slice by slice.

    Args:
        files_or_folder: a folder holding exactly one series (searched recursively; non-DICOM
            files are ignored), or the files of one series.

    Returns:
        ``ImageData`` with ``array`` ``[C, D, H, W]`` (``C`` = 1 grey, 3 RGB) and
        ``metadata["format"] == "dicom-series"``, ``spacing`` ``[slice, row, column]`` in mm,
        ``SOPInstanceUIDs`` and ``files`` in slice order, ``slice_order`` (``"position"`` or
        ``"instance_number"``), and with positions ``slice_spacing_uniform`` (``False`` when a
        step differs from the median step, e.g. missing slices; the spacing is the median).
        A series of a single file is read as that file
        (:func:`~sitefusion.io.dicom.read_dicom`), so it may be 2D.

    Raises:
        ImageReadError: no DICOM files, several series, a listed file that is not DICOM,
            slices of different shape or orientation, slices sharing a position, multi-frame
            slices, or any per-file read error.
    """
    if isinstance(files_or_folder, (str, os.PathLike)):
        source = Path(files_or_folder)
        if not source.exists():
            raise ImageReadError(source, "file does not exist")
        given = [source]
    else:
        given = [Path(p) for p in files_or_folder]
        if not given:
            raise ImageReadError("<no files>", "no files given for a DICOM series")
        source = given[0].parent
    folder_mode = any(p.is_dir() for p in given)
    groups, skipped = _group(_expand(given))
    if not groups:
        raise ImageReadError(source, "no DICOM image files found")
    if len(groups) > 1:
        shown = [
            f"{uid} ({len(files)} file{'s' if len(files) > 1 else ''})"
            for uid, files in list(groups.items())[:_LISTED_SERIES]
        ]
        if len(groups) > _LISTED_SERIES:
            shown.append(f"and {len(groups) - _LISTED_SERIES} more")
        raise ImageReadError(
            source,
            f"holds {len(groups)} DICOM series: {', '.join(shown)}; pass the files or folder "
            "of one series (group them with find_dicom_series)",
        )
    for path in skipped:
        # Other files may sit next to the series in a folder (notes, a DICOMDIR), but a
        # damaged DICOM file would silently drop a slice: it is reported.
        if folder_mode and not has_dicom_preamble(path):
            continue
        ds = read_dicom_dataset(path, stop_before_pixels=True)  # raises the precise reason
        if folder_mode and _is_dicomdir(ds):
            continue
        raise ImageReadError(
            path, "DICOM file has no SeriesInstanceUID (truncated, or not an image instance)"
        )
    files = next(iter(groups.values()))
    if len(files) == 1:
        return read_dicom(files[0], max_elements=max_elements)
    return _stack(source, files, max_elements)


def _is_dicomdir(ds: Any) -> bool:
    file_meta = getattr(ds, "file_meta", None)
    sop_class = file_meta.get("MediaStorageSOPClassUID") if file_meta is not None else None
    return str(sop_class) == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds


def _stack(source: Path, files: list[Path], max_elements: int = MAX_ELEMENTS) -> ImageData:
    # Headers first: the series' size is checked before any slice's pixels are read.
    claimed = [claimed_shape(read_dicom_dataset(f, stop_before_pixels=True)) for f in files]
    check_size(source, (sum(s[0] for s in claimed), *max(claimed)[1:]), max_elements)
    datasets = [read_dicom_dataset(f, max_elements=max_elements) for f in files]
    order, positions, how = _slice_order(source, files, datasets)
    slices: list[np.ndarray] = []
    first_shape: tuple[int, ...] | None = None
    for index in order:
        pixels = decode_dicom_pixels(datasets[index], files[index])
        if pixels.shape[1] != 1:
            raise ImageReadError(
                files[index],
                f"series member is multi-frame ({pixels.shape[1]} frames); "
                "read multi-frame files one by one with read_image",
            )
        if first_shape is None:
            first_shape = pixels.shape
        elif pixels.shape != first_shape:
            raise ImageReadError(
                files[index],
                f"slice shape {list(pixels.shape[:1] + pixels.shape[2:])} differs from "
                f"{list(first_shape[:1] + first_shape[2:])} of {files[order[0]]}",
            )
        slices.append(pixels[:, 0])
    volume = np.stack(slices, axis=1)  # [C, D, H, W]
    first = datasets[order[0]]
    metadata = dicom_metadata(first, source)
    metadata["format"] = "dicom-series"
    metadata["SOPInstanceUIDs"] = [str(datasets[i].get("SOPInstanceUID", "")) for i in order]
    metadata["files"] = [str(files[i]) for i in order]
    metadata["num_frames"] = len(order)
    metadata["slice_order"] = how
    metadata["spacing"] = _spacing(first, positions)
    if positions is not None:
        metadata["slice_spacing_uniform"] = _uniform(positions)
    return build_image(source, volume, metadata)


def _floats(value: Any, count: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == count and all(np.isfinite(out)) else None


def _slice_order(
    source: Path, files: list[Path], datasets: list[Any]
) -> tuple[list[int], list[float] | None, str]:
    """Indices of ``datasets`` in slice order, the sorted positions (mm) if known, and how."""
    orientations = [_floats(ds.get("ImageOrientationPatient"), 6) for ds in datasets]
    origins = [_floats(ds.get("ImagePositionPatient"), 3) for ds in datasets]
    if all(o is not None for o in orientations) and all(p is not None for p in origins):
        iop = np.asarray(orientations, dtype=np.float64)
        if np.abs(iop - iop[0]).max() > _ORIENTATION_TOLERANCE:
            raise ImageReadError(
                source, "slices have different orientations (e.g. a localizer); cannot stack"
            )
        normal = np.cross(iop[0, :3], iop[0, 3:])
        along = np.asarray(origins, dtype=np.float64) @ normal
        order = [int(i) for i in np.argsort(along, kind="stable")]
        sorted_positions = along[order]
        steps = np.diff(sorted_positions)
        if np.any(steps < _POSITION_TOLERANCE_MM):
            dup = order[int(np.argmax(steps < _POSITION_TOLERANCE_MM)) + 1]
            raise ImageReadError(
                files[dup],
                "shares its slice position with another file of the series (several "
                "echoes, phases or repeated files?); pass one volume's files",
            )
        return order, [float(v) for v in sorted_positions], "position"
    numbers = [_integer(ds.get("InstanceNumber")) for ds in datasets]
    ints = [n for n in numbers if n is not None]
    if len(ints) == len(numbers) and len(set(ints)) == len(ints):
        return sorted(range(len(ints)), key=ints.__getitem__), None, "instance_number"
    raise ImageReadError(
        source,
        "cannot order the slices: ImagePositionPatient/ImageOrientationPatient are missing "
        "and InstanceNumber is missing or repeated",
    )


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _uniform(positions: list[float]) -> bool:
    """False when a step between sorted slices differs from the median step (missing slices)."""
    steps = np.diff(positions)
    median = float(np.median(steps))
    return bool(np.all(np.abs(steps - median) <= _SPACING_TOLERANCE * median + 1e-3))


def _spacing(first: Any, positions: list[float] | None) -> list[float] | None:
    """``[slice, row, column]`` spacing in mm, or ``None`` when any part is unknown."""
    in_plane = _floats(first.get("PixelSpacing"), 2)
    if in_plane is None or min(in_plane) <= 0:
        return None
    if positions is not None:
        depth = float(statistics.median(np.diff(positions).tolist()))
    else:
        between = _floats([first.get("SpacingBetweenSlices")], 1)
        if between is None:
            return None
        depth = between[0]
    return [depth, *in_plane] if depth > 0 else None
