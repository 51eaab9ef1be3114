"""Process-wide allocator settings for the long batch loops.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at start, raised as such
blocks are freed) with a fresh ``mmap`` and gives it back with ``munmap``; it also returns the
free top of each heap to the system once it passes the trim threshold. A scoring batch
allocates and frees the same large arrays over and over (decoded images, their float copies,
the networks' activations), in several threads, each with its own arena: every fresh mapping
is faulted in again page by page. Scoring 2048 HAM10000 images in a fresh process took 2.98
million minor page faults and 10.1 s of system CPU time (against 76 s of user time); with the
thresholds fixed as below, 28,305 and 2.7 s, at the same peak resident memory (1024 images:
516 and 512 MiB) (docs/benchmarks.md, "Batch scoring"). glibc raises its threshold by itself
after the first large blocks are freed, so the storm is worst in exactly the one-shot process
a ``sitefusion score`` command is.

The cost: freed memory stays with the process (up to the trim threshold per heap) instead of
going back to the system between batches. Nothing else changes: the allocator's placement does
not change a computed value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (half its 64 MiB heap size); blocks
# larger than this (a volume, a big DICOM) are still mapped and unmapped one by one.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 512 << 20

_done = False


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); returns whether they
    were set (``False`` off Linux/glibc, e.g. macOS or musl, where nothing changes)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
