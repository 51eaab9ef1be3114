"""Deflated DICOM files (transfer syntax 1.2.840.10008.1.2.1.99), inflated within a bound.

pydicom inflates the whole data set of such a file in one ``zlib.decompress`` call, even to read
its header: a 1.5 MB file can inflate to gigabytes before any size check runs. Here the data set
is inflated in a stream (``zlib.decompressobj`` with ``max_length``) and never past a cap: the
header alone within :data:`HEADER_BYTES`; the whole data set within what its header's image
needs (after :func:`~sitefusion.io.files.check_size` accepted that image) plus
:data:`HEADER_BYTES`. pydicom then parses the inflated bytes as Explicit VR Little Endian, as it
would have; the file meta keeps the file's transfer syntax.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from sitefusion.errors import ImageReadError

__all__ = ["DEFLATED_UID", "HEADER_BYTES", "inflate", "is_deflated", "read_deflated"]

DEFLATED_UID = "1.2.840.10008.1.2.1.99"
#: Most bytes a deflated data set may inflate to before (or besides) its pixel data.
HEADER_BYTES = 32 << 20
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_CHUNK = 1 << 20
_META_GROUP = b"\x02\x00"  # group 0x0002 (file meta), little endian


def is_deflated(path: Path) -> bool:
    """True when the file meta of ``path`` names the deflated syntax: after the preamble and
    ``DICM``, or at the very start (pydicom reads file meta there too, and inflates)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False  # the reader reports the same problem with the file
    has_meta = head[128:132] == b"DICM" or head.startswith(_META_GROUP)
    return has_meta and DEFLATED_UID.encode() in head


def inflate(fh: Any, cap: int, wbits: int = -zlib.MAX_WBITS) -> tuple[bytes, bool]:
    """Inflate the deflate stream of ``fh`` from its position, at most ``cap`` bytes of it:
    raw (``wbits`` -15, as in a deflated DICOM) or gzip (``wbits`` 31). Returns the bytes and
    whether the stream held more. A corrupt or cut stream gives what inflated before the fault
    (the parser then reports a truncated file)."""
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    total = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or fh.read(_CHUNK)
        try:
            part = inflater.decompress(data, cap - total + 1)
        except zlib.error:
            break  # corrupt stream: what was inflated so far is parsed, and reported on
        if not part and not data:
            break  # the file ends inside the stream: truncated
        total += len(part)
        if total > cap:
            parts.append(part[: len(part) - (total - cap)])
            return b"".join(parts), True
        parts.append(part)
    return b"".join(parts), False


def _parse(path: Path, cap: int, stop_before_pixels: bool) -> tuple[Any, bool, bool]:
    """(dataset, whether the inflated bytes were cut at ``cap``, whether pixel data was met)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset, read_preamble

    met: list[bool] = []

    def at_pixels(tag: Any, _vr: Any, _length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            met.append(True)
            return stop_before_pixels
        return False

    with path.open("rb") as fh:
        preamble = read_preamble(fh, True)  # None (and back at 0) without "DICM"
        meta = read_dataset(fh, False, True, stop_when=lambda tag, _vr, _n: tag.group != 2)
        file_meta = FileMetaDataset(meta)
        if str(file_meta.get("TransferSyntaxUID", "")) != DEFLATED_UID:
            # not deflated after all: pydicom reads it as usual
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
            return ds, False, True
        data, cut = inflate(fh, cap)
    buffer = DicomBytesIO(data)
    buffer.name = str(path)
    dataset = read_dataset(cast(BinaryIO, buffer), False, True, stop_when=at_pixels)
    ds = FileDataset(str(path), dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, cut, bool(met)


def read_deflated(
    path: Path,
    *,
    stop_before_pixels: bool,
    pixel_bytes: Callable[[Any], int] | None = None,
) -> Any:
    """Parse a deflated DICOM file within the bounds of the module docstring.

    Args:
        stop_before_pixels: the header only, as ``pydicom.dcmread`` does.
        pixel_bytes: for a whole read, the bytes the header's image needs (the caller checks
            the header's size claim in it and raises if it is too large).

    Raises:
        ImageReadError: the data set inflates to more than its bound.
    """
    header, cut, met = _parse(path, HEADER_BYTES, stop_before_pixels=True)
    if cut and not met:
        raise ImageReadError(
            path,
            f"deflated DICOM data set inflates to more than {HEADER_BYTES:,} bytes before "
            "its pixel data; refused before inflating it whole",
        )
    if stop_before_pixels:
        return header
    need = pixel_bytes(header) if pixel_bytes is not None else 0
    cap = need + HEADER_BYTES
    ds, cut, _ = _parse(path, cap, stop_before_pixels=False)
    if cut:
        raise ImageReadError(
            path,
            f"deflated DICOM data set inflates to more than {cap:,} bytes, more than its "
            f"header's image needs ({need:,} bytes of pixels); refused before inflating it "
            "whole",
        )
    return ds
