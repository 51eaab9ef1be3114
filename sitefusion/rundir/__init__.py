"""The run directory: hashed, atomically written artifacts shared by every stage."""

from sitefusion.atomic import atomic_write
from sitefusion.rundir.store import MANIFEST_NAME, RunDir, sha256_file

__all__ = ["MANIFEST_NAME", "RunDir", "atomic_write", "sha256_file"]
