"""``ListenNode``: a DICOM node that receives studies, scores each series once it is complete and
sends the Structured Reports back.

* A C-STORE SCP (pynetdicom) accepts associations only from the allowed calling AE titles and
  only when called by its own AE title; each association runs in its own thread.
* Every received instance is written atomically into ``<out>/inbox/<series>/`` before the
  sender is told it was stored (:mod:`.inbox`).
* A series is scored once nothing arrived in it for ``quiet_seconds``: one worker thread calls
  the batch scorer (:func:`sitefusion.scoring.score_inputs`) on the received files, which writes
  ``scores.csv`` / ``scores.jsonl`` and one SR per series into ``<out>``, exactly as
  ``sitefusion score`` does, and skips what its journal says is already scored.
* Each SR whose SOP Instance UID was not yet confirmed by the destination is sent (C-STORE or
  STOW-RS) and recorded in ``<out>/node.json`` (:mod:`.ledger`); a failed send is retried.

After a crash the restarted node finds the inbox, the scoring journal and the ledger on disk:
what was received and not scored is scored, what was scored and not sent is sent. The log
names associations (calling AE title, address, counts), series by folder and counts, never a
patient attribute.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydicom import dcmread

from sitefusion.atomic import lock_folder
from sitefusion.errors import MissingDependencyError, SiteFusionError
from sitefusion.methods import LoadedRun
from sitefusion.pacs.destinations import Destination, SendError, check_ae_title
from sitefusion.pacs.inbox import Inbox
from sitefusion.pacs.ledger import SentLedger
from sitefusion.scoring import score_inputs
from sitefusion.scoring.sr import PatientModule

__all__ = ["ListenNode", "NodeSettings"]

log = logging.getLogger("sitefusion.pacs")

# DIMSE status codes answered to a C-STORE (PS3.4 Annex B.2.3)
_STATUS_SUCCESS = 0x0000
_STATUS_OUT_OF_RESOURCES = 0xA700


@dataclass(frozen=True)
class NodeSettings:
    """How a node listens, scores and sends.

    Attributes:
        run_dir: a finished run directory.
        out: the node's folder (inbox, scores, SRs, ``node.json``).
        ae_title: this node's AE title (the title senders must call).
        port: TCP port of the SCP; ``host`` the address it binds (``0.0.0.0``: every interface).
        allow: calling AE titles accepted; every other one is refused at association.
        destination: where SRs go (``None``: kept in ``<out>/sr`` only).
        quiet_seconds: a series is scored once nothing arrived in it for this long.
        site, explain, sr_patient: as for ``sitefusion score``.
        poll_seconds: how often the worker looks for quiet series and unsent SRs.
        retry_seconds: wait after a failed send before the next try.
    """

    run_dir: Path
    out: Path
    ae_title: str
    port: int
    allow: tuple[str, ...]
    destination: Destination | None = None
    quiet_seconds: float = 10.0
    host: str = "0.0.0.0"
    site: str | None = None
    explain: bool = False
    sr_patient: PatientModule = "source"
    poll_seconds: float = 0.5
    retry_seconds: float = 10.0

    def check(self) -> NodeSettings:
        """Validate the values a command line can get wrong; returns ``self``."""
        check_ae_title(self.ae_title, "--ae-title")
        if not self.allow:
            raise SiteFusionError(
                "--allow: no calling AE title allowed; name each sender, e.g. --allow PACS"
            )
        for title in self.allow:
            check_ae_title(title, "--allow")
        if not 0 <= self.port <= 65535:
            raise SiteFusionError(f"--port: {self.port} is not between 0 and 65535")
        if not self.quiet_seconds >= 0:
            raise SiteFusionError(f"--quiet-seconds: {self.quiet_seconds} must be >= 0")
        return self


@dataclass
class _Counts:
    calling: str
    address: str
    stored: int = 0
    failed: int = 0


@dataclass
class ListenNode:
    """One node: :meth:`start` it, :meth:`stop` it (or use :meth:`serve` until an event)."""

    settings: NodeSettings
    inbox: Inbox = field(init=False)
    ledger: SentLedger = field(init=False)
    _server: Any = None
    _worker: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock_fh: IO[bytes] | None = None
    _assocs: dict[int, _Counts] = field(default_factory=dict)
    _assoc_lock: threading.Lock = field(default_factory=threading.Lock)
    _retry_at: dict[str, float] = field(default_factory=dict)
    passes: int = 0

    def __post_init__(self) -> None:
        s = self.settings.check()
        s.out.mkdir(parents=True, exist_ok=True)
        self._lock_folder(s.out)
        self.inbox = Inbox(s.out / "inbox")
        self.ledger = SentLedger(s.out / "node.json")

    # -- lifecycle -------------------------------------------------------------------------------
    def _lock_folder(self, out: Path) -> None:
        self._lock_fh = lock_folder(
            out / ".node.lock",
            f"{out}: another sitefusion listen node uses this folder; stop it or use another --out",
        )

    def start(self) -> int:
        """Load the run once (it must be complete and unchanged), start the SCP and the worker;
        returns the port listened on.

        Raises:
            ArtifactError: the run cannot be loaded.
            OSError: the port cannot be bound.
        """
        try:
            from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
            from pynetdicom.presentation import AllStoragePresentationContexts
            from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
        except ImportError as err:  # lazy above: an optional dependency (extra "pacs")
            raise MissingDependencyError(
                "sitefusion listen needs pynetdicom: pip install 'sitefusion[pacs]'"
            ) from err
        s = self.settings
        # A run that cannot be loaded is refused now, not at the first study.
        LoadedRun(s.run_dir)
        ae = AE(ae_title=s.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(s.allow)
        ae.maximum_associations = 16
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = ae.start_server((s.host, s.port), block=False, evt_handlers=handlers)
        port = int(self._server.server_address[1])
        self._worker = threading.Thread(target=self._work, name="sitefusion-node", daemon=True)
        self._worker.start()
        log.info(
            "listening as %s on %s:%d; allowed calling AE titles: %s; SRs to %s",
            s.ae_title,
            s.host,
            port,
            ", ".join(s.allow),
            s.destination.describe() if s.destination else "(kept in sr/ only)",
        )
        return port

    def stop(self) -> None:
        """Stop accepting, finish the current pass, release the folder."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None
        log.info("stopped")

    def serve(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (a signal handler sets it), then :meth:`stop`."""
        self.start()
        try:
            while not stop.wait(0.5):
                if self._worker is not None and not self._worker.is_alive():
                    raise SiteFusionError("the node's worker stopped; see the log above")
        finally:
            self.stop()

    # -- association events (association threads) -----------------------------------------------
    def _counts(self, event: Any) -> _Counts:
        key = id(event.assoc)
        with self._assoc_lock:
            if key not in self._assocs:
                req = event.assoc.requestor
                self._assocs[key] = _Counts(str(req.ae_title), f"{req.address}:{req.port}")
            return self._assocs[key]

    def _on_accepted(self, event: Any) -> None:
        c = self._counts(event)
        log.info("association from %s (%s) accepted", c.calling, c.address)

    def _on_rejected(self, event: Any) -> None:
        req = event.assoc.requestor
        log.warning(
            "association from %r (%s) refused: calling AE title not allowed or not calling %s",
            str(req.ae_title),
            req.address,
            self.settings.ae_title,
        )

    def _on_closed(self, event: Any) -> None:
        with self._assoc_lock:
            c = self._assocs.pop(id(event.assoc), None)
        if c is not None:
            how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
            log.info(
                "association from %s (%s) %s: %d instance(s) stored, %d failed",
                c.calling,
                c.address,
                how,
                c.stored,
                c.failed,
            )

    def _on_store(self, event: Any) -> int:
        c = self._counts(event)
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        series_uid: object = None
        try:  # a dataset that does not decode is kept all the same: scoring gives it its row
            series_uid = event.dataset.get("SeriesInstanceUID")
        except Exception:
            log.warning("an instance from %s does not decode; stored for an error row", c.calling)
        try:
            data = event.encoded_dataset()
            self.inbox.store(data, str(series_uid) if series_uid else None, sop_uid)
        except OSError as err:  # disk full, say: the sender keeps it and can send it again
            c.failed += 1
            log.error("cannot store an instance from %s: %s", c.calling, type(err).__name__)
            return _STATUS_OUT_OF_RESOURCES
        c.stored += 1
        return _STATUS_SUCCESS

    # -- worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.process_once()
            except Exception:  # the node keeps receiving; the next pass tries again
                log.exception("scoring pass failed; retrying")
                self._stop.wait(self.settings.retry_seconds)
            self._stop.wait(self.settings.poll_seconds)

    def process_once(self, now: float | None = None) -> None:
        """Score the series that became quiet, then send every SR not yet confirmed."""
        s = self.settings
        now = time.time() if now is None else now
        series = self.inbox.series()
        due = [
            n for n, st in series.items() if st.dirty and now - st.last_arrival >= s.quiet_seconds
        ]
        if due:
            # Series still receiving are left out (their rows come when they are complete);
            # the others stay in the batch, so their rows stay in scores.csv.
            ready = [n for n, st in series.items() if not st.dirty or n in due]
            files = [f for n in sorted(ready) for f in series[n].files()]
            summary = score_inputs(
                s.run_dir,
                files,
                s.out,
                site=s.site,
                explain=s.explain,
                sr_patient=s.sr_patient,
                workers=1,
            )
            self.inbox.mark_clean(due, before=now)
            self.passes += 1
            log.info(
                "scored %d series: %d items (%d scored now, %d already done), %d ok, %d errors; "
                "%d SR",
                len(due),
                summary.items,
                summary.scored,
                summary.skipped,
                summary.ok,
                summary.errors,
                summary.sr_written,
            )
            for reason in summary.sr_errors:
                log.warning("%s", reason)
        self.send_pending(now)

    def send_pending(self, now: float) -> int:
        """Send the SRs in ``<out>/sr`` that the destination has not confirmed; returns how
        many were sent now."""
        dest = self.settings.destination
        folder = self.settings.out / "sr"
        if dest is None or not folder.is_dir():
            return 0
        sent = 0
        for path in sorted(folder.glob("*.dcm")):
            if self._stop.is_set() or self._retry_at.get(path.name, 0.0) > now:
                continue
            try:
                uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            except Exception as err:
                log.error("%s: unreadable SR: %s", path.name, type(err).__name__)
                continue
            if self.ledger.sent_uid(path.name) == uid:
                continue
            try:
                dest.send(path)
            except SendError as err:
                self._retry_at[path.name] = now + self.settings.retry_seconds
                log.warning("%s; retrying in %.0f s", err, self.settings.retry_seconds)
                continue
            self.ledger.record(path.name, uid, dest.describe())
            self._retry_at.pop(path.name, None)
            sent += 1
            log.info("sent SR %s to %s", path.name, dest.describe())
        return sent
