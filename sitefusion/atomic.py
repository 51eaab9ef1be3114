"""File writes that are atomic, and content hashes of files.

Writes go to a temporary file in the target folder, are fsynced, then ``os.replace``-d.

Readers see the old file or the new one, never half of one, and an interrupted write leaves no
stray temporary file. Every artifact sitefusion writes goes through here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sitefusion.errors import OutputFolderError, SiteFusionError

__all__ = [
    "atomic_write",
    "ensure_writable_folder",
    "lock_folder",
    "sha256_file",
    "write_bytes_atomic",
    "write_bytes_replaceable",
    "write_text_atomic",
]


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", *, durable: bool = True
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (text mode is UTF-8 with ``\\n`` newlines); on success
    it replaces ``path`` in one step, on failure it is removed. Parent folders are created.
    ``durable``: flush the file to disk before the rename (off only for files that are cheap to
    make again and that a reader checks, such as the review page's thumbnails)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        binary = "b" in mode
        with os.fdopen(
            fd, mode, encoding=None if binary else "utf-8", newline=None if binary else "\n"
        ) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically; returns the path."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` atomically (``durable``: see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "wb", durable=durable) as fh:
        fh.write(data)
    return Path(path)


def write_bytes_replaceable(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` atomically but not durably, with the permissions a plain ``open()`` gives
    (0666 less the umask), for many small files that are cheap to make again (the review page's
    thumbnails): no ``mkstemp`` and no ``chmod`` afterwards, no fsync. The temporary name is
    unique to this process and thread; a stale one (a crash, then the same process id) is
    replaced. Parent folders are created."""
    target = Path(path)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def lock_folder(path: Path, busy: str) -> IO[bytes] | None:
    """Take an exclusive, non-blocking ``flock`` on ``path`` (a lock file in the folder one
    writer owns); returns the open file, whose closing releases the lock. ``SiteFusionError``
    with ``busy`` when another process holds it; ``None`` where there is no ``flock`` (not
    POSIX: a single writer is assumed)."""
    try:
        import fcntl
    except ImportError:
        return None
    fh = path.open("wb")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        fh.close()
        raise SiteFusionError(busy) from err
    return fh


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_writable_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it takes a file, before any heavy work is done.

    Raises:
        OutputFolderError: one line naming the path and the reason: it is a file, a parent is
            a file, it cannot be created, or a probe file cannot be written (read-only file
            system, disk full, no permission).
    """
    folder = Path(path)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == folder else f"lies under {parent}, which is"
            raise OutputFolderError(f"{folder}: the {what} {where} a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        try:
            os.write(fd, b"\0" * 4096)  # a full disk fails here, not at mkstemp
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise OutputFolderError(
            f"{folder}: the {what} cannot be written ({err.strerror or err})"
        ) from err
    return folder
