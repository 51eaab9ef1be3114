"""The run directory: the one contract between training, evaluation and scoring.

Every artifact is written atomically (temporary file in the same folder, then ``os.replace``) and
its SHA-256 recorded in ``manifest.json``. Loading an artifact checks its hash first; a changed or
missing file is refused with an :class:`ArtifactError` that names it. Weights are safetensors,
everything else JSON, YAML or CSV: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sitefusion.atomic import atomic_write, sha256_file
from sitefusion.errors import ArtifactError, OutputFolderError
from sitefusion.io import not_a_file

__all__ = ["MANIFEST_NAME", "RunDir", "atomic_write", "sha256_file"]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
#: Modes of every file and sub-folder a run writes: readable by other users, so that a run trained
#: by one account can be scored by another (the scoring service's). The run folder itself is
#: created under the user's umask and never changed: it is what keeps a run private
#: (``umask 077`` or ``chmod 700 RUN``), whatever the modes inside.
FILE_MODE = 0o644
FOLDER_MODE = 0o755


def _require_regular_file(path: Path, what: str) -> None:
    """Refuse a run file that is not a regular file (links followed) before it is opened."""
    problem = not_a_file(path)
    if problem is not None:
        raise ArtifactError(f"{problem}; a run's {what} must be a regular file")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RunDir:
    """A run directory with hashed, atomically written artifacts.

    Paths passed to the methods are relative to the run directory (``"experts/site_a.safetensors"``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- manifest ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def read_manifest(self) -> dict[str, Any]:
        """The run manifest (``{"version", "artifacts": {relpath: sha256}, ...}``)."""
        if not self.manifest_path.exists() and not self.manifest_path.is_symlink():
            return {"version": FORMAT_VERSION, "artifacts": {}}
        _require_regular_file(self.manifest_path, "run manifest")
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except RecursionError as err:
            raise ArtifactError(
                f"{self.manifest_path}: malformed run manifest (nested too deeply to read)"
            ) from err
        except (OSError, ValueError) as err:  # ValueError: JSON, or text that is not UTF-8
            raise ArtifactError(f"{self.manifest_path}: unreadable run manifest ({err})") from err
        if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
            raise ArtifactError(f"{self.manifest_path}: malformed run manifest (no 'artifacts')")
        return data

    def _record(self, rel: str, extra: Mapping[str, Any] | None = None) -> None:
        self._publish(rel)
        data = self.read_manifest()
        data["version"] = FORMAT_VERSION
        data["artifacts"][rel] = sha256_file(self.root / rel)
        if extra:
            data.update(extra)
        with atomic_write(self.manifest_path) as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.chmod(self.manifest_path, FILE_MODE)

    def _publish(self, rel: str) -> None:
        """Give ``rel`` and the run's sub-folders above it the run's modes (mkstemp makes 0600)."""
        os.chmod(self.root / rel, FILE_MODE)
        for folder in Path(rel).parents[:-1]:  # not the run folder itself ("."): see FOLDER_MODE
            os.chmod(self.root / folder, FOLDER_MODE)

    def set_info(self, **info: Any) -> None:
        """Store run-level facts (run id, status, timings) in the manifest."""
        data = self.read_manifest()
        data.update(info)
        with atomic_write(self.manifest_path) as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        os.chmod(self.manifest_path, FILE_MODE)

    def has(self, rel: str) -> bool:
        """Whether ``rel`` is recorded in the manifest and present on disk."""
        return rel in self.read_manifest()["artifacts"] and (self.root / rel).exists()

    def verify(self, rel: str) -> Path:
        """Check ``rel`` against its recorded SHA-256 and return its path."""
        path = self.root / rel
        expected = self.read_manifest()["artifacts"].get(rel)
        if expected is None:
            raise ArtifactError(
                f"{path}: not recorded in {self.manifest_path.name}; the run is incomplete"
            )
        if not path.exists() and not path.is_symlink():
            raise ArtifactError(f"{path}: artifact listed in the run manifest is missing")
        _require_regular_file(path, "artifact")  # hashing /dev/zero or a FIFO never ends
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: SHA-256 does not match the run manifest (file changed after training; "
                f"expected {expected[:12]}…, found {actual[:12]}…)"
            )
        return path

    def verify_all(self) -> list[str]:
        """Check every recorded artifact; return their relative paths."""
        rels = sorted(self.read_manifest()["artifacts"])
        for rel in rels:
            self.verify(rel)
        return rels

    def refuse_output_inside(
        self, out: str | os.PathLike[str], what: str, *, report: bool = False
    ) -> None:
        """Refuse an output folder that is this run directory or lies inside it (links resolved).

        Scoring reads a run and never writes into it: its files there would be mistaken for the
        run's own, and a lock or a partial write would sit among its artifacts. An evaluation
        report (``report=True``) may be a sub-folder of the run, as ``runs/ham/report`` is by
        convention (the report is about that run, and no artifact is recorded there), but not
        the run folder itself nor a folder that holds the run's recorded artifacts.

        Raises:
            OutputFolderError: naming the folder, the run directory and what to do instead.
        """
        real_run = Path(os.path.realpath(self.root))
        real_out = Path(os.path.realpath(out))
        if real_out != real_run and real_run not in real_out.parents:
            return
        if report and real_out != real_run:
            first = real_out.relative_to(real_run).parts[0]
            owned = {Path(rel).parts[0] for rel in self.read_manifest()["artifacts"]}
            if first not in owned:
                return
            raise OutputFolderError(
                f"{out}: the {what} would be written among the run's own artifacts "
                f"({self.root / first}); use a folder of its own, such as {self.root / 'report'}"
            )
        raise OutputFolderError(
            f"{out}: the {what} is inside the run directory {self.root}; a run is read, "
            "never written into: choose a folder outside it"
        )

    # -- writers -------------------------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> Path:
        """Write JSON atomically and record its hash."""
        path = self.root / rel
        with atomic_write(path) as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        self._record(rel)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        """Write text (YAML, CSV) atomically and record its hash."""
        path = self.root / rel
        with atomic_write(path) as fh:
            fh.write(text)
        self._record(rel)
        return path

    def write_tensors(
        self,
        rel: str,
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write tensors as safetensors atomically and record the hash."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                tmp,
                metadata=dict(metadata) if metadata else None,
            )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._record(rel)
        return path

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write ``data`` as it is (a file received from another run directory) atomically and
        record its hash."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._record(rel)
        return path

    def adopt(self, rel: str) -> None:
        """Record the hash of a file already written into the run directory."""
        if not (self.root / rel).exists():
            raise ArtifactError(f"{self.root / rel}: cannot record a missing file")
        self._record(rel)

    # -- readers (hash-checked) ----------------------------------------------------------------
    def read_json(self, rel: str) -> Any:
        """Read a recorded JSON artifact after checking its hash."""
        path = self.verify(rel)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except RecursionError as err:
            raise ArtifactError(f"{path}: not valid JSON (nested too deeply to read)") from err
        except (OSError, ValueError) as err:  # ValueError: JSON, or text that is not UTF-8
            raise ArtifactError(f"{path}: not valid JSON ({err})") from err

    def read_text(self, rel: str) -> str:
        """Read a recorded text artifact after checking its hash."""
        return self.verify(rel).read_text(encoding="utf-8")

    def read_tensors(self, rel: str) -> dict[str, torch.Tensor]:
        """Read a recorded safetensors artifact after checking its hash."""
        path = self.verify(rel)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err
