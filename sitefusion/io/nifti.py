"""Read NIfTI-1/NIfTI-2 images (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pairs) with nibabel.

Axis order: nibabel gives voxels as ``(X, Y, Z[, T])`` in storage order; the reader reverses
the axes, so a volume becomes ``[1, Z, Y, X]`` (depth first, like a DICOM series) and a time
series ``[T, Z, Y, X]`` (time points as channels). No reorientation is done: the axes follow
the file's voxel order, not an anatomical convention. ``spacing`` is the header's voxel size in
the same reversed order (``[dz, dy, dx]``).
"""

from __future__ import annotations

import io
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError
from sitefusion.io.deflated import HEADER_BYTES, inflate
from sitefusion.io.files import MAX_ELEMENTS, check_size
from sitefusion.io.formats import NIFTI_SUFFIXES, nifti_magic, require_file
from sitefusion.io.types import ImageData, build_image

__all__ = ["read_nifti"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_HEADER_BYTES = 544  # a NIfTI-2 header (540) and the extension flag
_SHORT_READ = re.compile(r"Expected (?P<expected>\d+) bytes, got (?P<got>\d+) bytes")


def read_nifti(path: str | os.PathLike[str], *, max_elements: int = MAX_ELEMENTS) -> ImageData:
    """Read a NIfTI image; scaling (``scl_slope``/``scl_inter``) is applied by nibabel.

    Shapes (trailing singleton axes beyond the third are dropped first):
    ``(X, Y)`` or ``(X, Y, 1)`` -> ``[1, Y, X]``; ``(X, Y, Z)`` -> ``[1, Z, Y, X]``;
    ``(X, Y, 1, T)`` -> ``[T, Y, X]``; ``(X, Y, Z, T)`` -> ``[T, Z, Y, X]``.

    Returns:
        ``ImageData`` with ``metadata`` ``path``, ``format`` (``"nifti"``), ``spacing``,
        ``ndim_original``, ``shape_original``.

    Raises:
        ImageReadError: not NIfTI (other nibabel formats included), truncated or corrupt data,
            more than four axes, non-finite values.
    """
    import nibabel as nib

    p = require_file(path)
    try:
        image = _load(p, max_elements)
    except ImageReadError:
        raise
    except nib.filebasedimages.ImageFileError as err:
        raise ImageReadError(
            p, "not an image: nibabel does not recognise the header (not NIfTI, or truncated)"
        ) from err
    except Exception as err:  # nibabel raises OSError, EOFError, ValueError...
        raise ImageReadError(p, f"not a readable NIfTI file: {_first_line(err)}") from err
    if not isinstance(image, nib.Nifti1Pair):  # Nifti1/2 images and pairs subclass it
        raise ImageReadError(
            p, f"unsupported format: {type(image).__name__} (only NIfTI-1/NIfTI-2 are read)"
        )
    check_size(p, tuple(int(s) for s in image.shape), max_elements)  # header only, no voxels
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
        zooms = [float(z) for z in image.header.get_zooms()]
    except FileNotFoundError as err:  # a .hdr whose .img is missing
        raise ImageReadError(p, f"NIfTI image file is missing: {err.filename}") from err
    except EOFError as err:  # gzip stream cut short
        raise ImageReadError(p, f"NIfTI file is truncated: {err}") from err
    except Exception as err:  # nibabel: "Expected 67650 bytes, got 1648 bytes from ..."
        short = _SHORT_READ.search(str(err))
        if short:
            raise ImageReadError(
                p,
                f"NIfTI file is truncated: voxel data has {short['got']} of "
                f"{short['expected']} bytes",
            ) from err
        raise ImageReadError(p, f"cannot read NIfTI voxel data: {_first_line(err)}") from err
    original_shape = [int(s) for s in data.shape]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    array, spatial = _channel_first(data, p)
    metadata: dict[str, Any] = {
        "path": str(p),
        "format": "nifti",
        "ndim_original": len(original_shape),
        "shape_original": original_shape,
        "spacing": _spacing(zooms, spatial),
    }
    return build_image(p, array, metadata)


def _load(path: Path, max_elements: int) -> Any:
    """``nib.load``, which trusts the suffix (and reads a ``.nii.gz`` only as far as the
    header needs); by magic number for files named otherwise, read only as far as the header
    needs too: the header is checked first, then at most its voxels' bytes are inflated."""
    import nibabel as nib

    if path.name.lower().endswith((*NIFTI_SUFFIXES, ".hdr", ".img")):
        return nib.load(path)
    kind = nifti_magic(path)
    if kind is None:
        return nib.load(path)  # raises ImageFileError: not recognised
    image_class = nib.Nifti1Image if kind == "nifti1" else nib.Nifti2Image
    with path.open("rb") as fh:
        zipped = fh.read(2) == b"\x1f\x8b"
        fh.seek(0)

        def head(n: int) -> bytes:
            return inflate(fh, n, _GZIP_WBITS)[0] if zipped else fh.read(n)

        first = head(_HEADER_BYTES)
        header = image_class.header_class.from_fileobj(io.BytesIO(first))
        shape = tuple(int(s) for s in header.get_data_shape())
        check_size(path, shape, max_elements)  # before any voxel is read
        offset = int(header.get_data_offset())
        if offset > HEADER_BYTES:  # header extensions of gigabytes: the offset alone is a bomb
            raise ImageReadError(
                path,
                f"NIfTI voxel offset (vox_offset) is {offset:,} bytes, more than the "
                f"{HEADER_BYTES:,} a header and its extensions may take",
            )
        need = offset + math.prod(shape) * header.get_data_dtype().itemsize
        fh.seek(0)
        data = head(max(need, len(first)))
    return image_class.from_bytes(data)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _channel_first(data: np.ndarray, path: Any) -> tuple[np.ndarray, list[int]]:
    """Reverse the axes into ``[C, (D,) H, W]``; also return the NIfTI axes kept (x=0...)."""
    if data.ndim == 2:
        return data.T[None], [1, 0]
    if data.ndim == 3:
        if data.shape[2] == 1:
            return data[:, :, 0].T[None], [1, 0]
        return data.T[None], [2, 1, 0]
    if data.ndim == 4:
        if data.shape[2] == 1:
            return data[:, :, 0, :].T, [1, 0]
        return data.T, [2, 1, 0]
    raise ImageReadError(
        path, f"unsupported dimensionality: NIfTI data shape {list(data.shape)} (2 to 4 axes read)"
    )


def _spacing(zooms: list[float], spatial: list[int]) -> list[float] | None:
    if len(zooms) <= max(spatial):
        return None
    spacing = [zooms[axis] for axis in spatial]
    return spacing if all(np.isfinite(s) and s > 0 for s in spacing) else None
