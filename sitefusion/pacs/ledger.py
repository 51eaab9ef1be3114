"""What a DICOM node has sent: ``node.json``, one SR instance UID per SR file, written
atomically after the destination confirmed it.

An SR is sent when its file's SOP Instance UID differs from the one recorded, so after a crash
between the destination's confirmation and the record the same SR is sent once more: the same
SOP Instance UID, which an archive stores as the same instance (never a second SR).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sitefusion.atomic import write_text_atomic
from sitefusion.errors import SiteFusionError

__all__ = ["SentLedger"]

_FORMAT = "sitefusion-node"
_VERSION = 1


class SentLedger:
    """The SRs a node sent, by SR file name (thread-safe); persisted at every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sent: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise SiteFusionError(f"{path}: unreadable node state ({err})") from err
            if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
                raise SiteFusionError(
                    f"{path}: field 'format' is {raw.get('format') if isinstance(raw, dict) else raw!r}; "
                    f"expected {_FORMAT!r} (is --out another program's folder?)"
                )
            if raw.get("version") != _VERSION:
                raise SiteFusionError(
                    f"{path}: field 'version' is {raw.get('version')!r}; expected {_VERSION}"
                )
            sent = raw.get("sent")
            if not isinstance(sent, dict):
                raise SiteFusionError(f"{path}: field 'sent' must be an object")
            self._sent = {str(k): dict(v) for k, v in sent.items() if isinstance(v, dict)}

    def sent_uid(self, name: str) -> str | None:
        """The SOP Instance UID last sent for the SR file ``name``."""
        with self._lock:
            entry = self._sent.get(name)
            return str(entry["sop_uid"]) if entry and "sop_uid" in entry else None

    def record(self, name: str, sop_uid: str, destination: str) -> None:
        """``sop_uid`` of ``name`` was confirmed by ``destination``: persist it."""
        with self._lock:
            self._sent[name] = {
                "sop_uid": sop_uid,
                "destination": destination,
                "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            text = json.dumps(
                {"format": _FORMAT, "version": _VERSION, "sent": self._sent}, indent=2
            )
            write_text_atomic(self.path, text + "\n")

    def count(self) -> int:
        """How many SR files were sent."""
        with self._lock:
            return len(self._sent)
