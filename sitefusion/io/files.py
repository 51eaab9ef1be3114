"""What a path is, found without opening it: reading a FIFO blocks forever and a character
device such as ``/dev/zero`` never ends, so nothing that is not a regular file is ever opened."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from sitefusion.errors import ImageReadError

__all__ = ["MAX_ELEMENTS", "check_size", "not_a_file"]

#: Largest image a reader decodes, in pixels or voxels times channels and frames (2**27: a
#: 512^3 volume). Checked from the header before anything is decoded: a 131 KB deflated DICOM
#: can claim gigabytes. Pillow has its own limit for raster images.
MAX_ELEMENTS = 2**27


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, found without opening it, or ``None`` for a
    regular file. Opening a FIFO would block, and ``/dev/zero`` never ends."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path}: broken symbolic link (to {os.readlink(path)})"
        return f"{path}: file does not exist"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path}: symbolic link loop"
        return f"{path}: cannot read ({err.strerror or err})"
    if stat.S_ISDIR(st.st_mode):
        try:
            os.scandir(path).close()
        except OSError as err:
            return f"{path}: folder cannot be listed ({err.strerror or err})"
        return f"{path}: is a folder"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    return f"{path}: not a regular file ({kind})"


def check_size(path: Path, shape: tuple[int, ...], limit: int = MAX_ELEMENTS) -> None:
    """Refuse an image whose header describes more than ``limit`` elements, before decoding.

    Raises:
        ImageReadError: naming the file, the shape the header claims and the limit.
    """
    total = 1
    for size in shape:
        total *= max(0, int(size))
    if total > limit:
        dims = "x".join(str(int(s)) for s in shape)
        raise ImageReadError(
            path,
            f"the header describes a {dims} image ({total:,} values), more than the limit of "
            f"{limit:,}; refused before decoding (raise scoring.max_elements to read it)",
        )
