"""The run directory: hashed, atomically written artifacts shared by every stage."""

from sitefusion.rundir.store import MANIFEST_NAME, RunDir, atomic_write, sha256_file

__all__ = ["MANIFEST_NAME", "RunDir", "atomic_write", "sha256_file"]
