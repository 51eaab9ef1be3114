"""Where a DICOM node keeps what it received until it is scored: ``inbox/<series>/<sop>.dcm``.

Every instance is written atomically (a hidden temporary file beside it, fsynced, renamed) and
only then acknowledged to the sender, so an instance the sender was told is stored survives a
crash of the node. A series is known by its folder; its last arrival is kept in memory while
the node runs; after a restart every series found is taken as just received, so the quiet time
starts again (its senders may have been waiting for the node to come back).

Folder and file names are UIDs (never patient data): the Series Instance UID when valid, else
``unknown-series``; the SOP Instance UID when valid, else the SHA-256 of the received bytes.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from sitefusion.atomic import write_bytes_atomic
from sitefusion.scoring.discovery import valid_uid

__all__ = ["UNKNOWN_SERIES", "Inbox", "SeriesState"]

UNKNOWN_SERIES = "unknown-series"
"""Folder of the instances whose Series Instance UID is missing or invalid."""


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z.-]", "_", name)


@dataclass
class SeriesState:
    """What the node knows of one received series: its folder, last arrival (``time.time()``),
    and whether something arrived since the series was last handed to scoring."""

    folder: Path
    last_arrival: float
    dirty: bool = True

    def files(self) -> list[Path]:
        """The series' received instances (finished writes only), in path order."""
        return sorted(
            p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )


class Inbox:
    """The received instances of one node, grouped by series (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._series: dict[str, SeriesState] = {}
        started = time.time()
        # A write cut short by a crash was never acknowledged (the sender sends it again):
        # its hidden temporary file is removed.
        for partial in root.glob("*/.*.tmp"):
            partial.unlink(missing_ok=True)
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            state = SeriesState(folder, started)
            if not folder.name.startswith(".") and state.files():
                self._series[folder.name] = state

    def store(self, data: bytes, series_uid: object, sop_uid: object) -> Path:
        """Write one received instance (``data``: a DICOM Part 10 file) atomically; returns its
        path. Called from the association threads."""
        with warnings.catch_warnings():  # pydicom warns on an invalid UID, which is answered here
            warnings.simplefilter("ignore")
            series = valid_uid(series_uid) or UNKNOWN_SERIES
            name = valid_uid(sop_uid) or hashlib.sha256(data).hexdigest()
        folder = self.root / _safe(series)
        path = write_bytes_atomic(folder / f"{_safe(name)}.dcm", data)
        with self._lock:
            state = self._series.setdefault(folder.name, SeriesState(folder, 0.0))
            state.last_arrival = time.time()
            state.dirty = True
        return path

    def series(self) -> dict[str, SeriesState]:
        """A snapshot of the known series by folder name."""
        with self._lock:
            return {
                k: SeriesState(v.folder, v.last_arrival, v.dirty) for k, v in self._series.items()
            }

    def quiet(self, quiet_seconds: float, now: float | None = None) -> dict[str, SeriesState]:
        """The series nothing arrived in for ``quiet_seconds``."""
        now = time.time() if now is None else now
        return {k: v for k, v in self.series().items() if now - v.last_arrival >= quiet_seconds}

    def mark_clean(self, names: list[str], before: float) -> None:
        """The series ``names`` were handed to scoring at ``before``: clean, unless something
        arrived since."""
        with self._lock:
            for name in names:
                state = self._series.get(name)
                if state is not None and state.last_arrival <= before:
                    state.dirty = False
