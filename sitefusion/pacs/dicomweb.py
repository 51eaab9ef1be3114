"""Scoring studies held by a DICOMweb server: find them (QIDO-RS), retrieve them (WADO-RS),
score them with the batch scorer, and store the SRs back (STOW-RS).

Retrieved instances are written atomically into ``<out>/dicomweb/<study>/<series>/<sop>.dcm``
(an instance already there is not fetched again, so a rerun resumes); objects without pixel
data (SRs, key-object selections, presentation states) are not images and are left on the
server. SRs sent are recorded in ``<out>/node.json`` (:mod:`.ledger`), so a rerun stores only
what is new. Credentials travel only in a :class:`requests.Session` (never on a command line
or in a log), and credentials over plain HTTP are refused except on loopback.
"""

from __future__ import annotations

import io
import logging
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread, dcmwrite

from sitefusion.atomic import atomic_write, ensure_writable_folder
from sitefusion.errors import MissingDependencyError, SiteFusionError
from sitefusion.pacs.destinations import SendError, StowDestination, dicomweb_session
from sitefusion.pacs.ledger import SentLedger
from sitefusion.scoring import ScoreSummary, score_inputs
from sitefusion.scoring.discovery import valid_uid

__all__ = ["DicomwebSummary", "parse_qido", "retrieve_studies", "score_dicomweb"]

log = logging.getLogger("sitefusion.pacs")


@dataclass(frozen=True)
class DicomwebSummary:
    """What :func:`score_dicomweb` did: the studies, instances retrieved now / already on disk,
    non-image objects left out, the scoring summary and SRs stored now."""

    studies: tuple[str, ...]
    retrieved: int
    reused: int
    not_images: int
    scoring: ScoreSummary
    stored: int


def parse_qido(text: str) -> dict[str, str]:
    """``'StudyDate=20240101-20240131&ModalitiesInStudy=CT'`` -> search filters; a one-line
    error naming ``--qido`` for anything that is not ``key=value`` pairs of DICOM keywords."""
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=False, strict_parsing=True)
    except ValueError as err:
        raise SiteFusionError(
            f"--qido: {text!r} is not key=value pairs joined by '&', e.g. "
            "'StudyDate=20240101-20240131&ModalitiesInStudy=CT'"
        ) from err
    for key, _ in pairs:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*|[0-9A-Fa-f]{8}", key):
            raise SiteFusionError(f"--qido: {key!r} is not a DICOM keyword or tag, e.g. StudyDate")
    return dict(pairs)


def _client(url: str, credentials: dict[str, str]) -> Any:
    try:
        from dicomweb_client.api import DICOMwebClient  # lazy: optional (extra "pacs")
    except ImportError as err:
        raise MissingDependencyError(
            "--dicomweb needs dicomweb-client: pip install 'sitefusion[pacs]'"
        ) from err
    return DICOMwebClient(url, session=dicomweb_session(url, credentials))


def _safe(uid: object, fallback: str) -> str:
    return valid_uid(str(uid) if uid is not None else None) or fallback


def retrieve_studies(
    url: str,
    folder: Path,
    *,
    studies: Sequence[str] = (),
    qido: dict[str, str] | None = None,
    credentials: dict[str, str] | None = None,
) -> tuple[list[str], list[Path], int, int]:
    """Find and retrieve studies into ``folder``.

    Returns the study UIDs, the files of their image instances, how many were retrieved now
    and how many instances without pixel data were left out.
    """
    client = _client(url, credentials or {})
    uids = list(dict.fromkeys(studies))
    for uid in uids:
        if valid_uid(uid) is None:
            raise SiteFusionError(f"--study: {uid!r} is not a valid DICOM UID")
    if qido:
        try:
            # One page: paging (get_remaining) never ends against Orthanc 1.10's plugin, and a
            # night's studies fit in a server's page (Orthanc: 100 by default).
            found = client.search_for_studies(search_filters=qido)
        except Exception as err:
            raise SiteFusionError(f"{url}: QIDO-RS search failed: {type(err).__name__}") from err
        for match in found:
            uid = (match.get("0020000D", {}).get("Value") or [None])[0]
            if isinstance(uid, str) and valid_uid(uid) and uid not in uids:
                uids.append(uid)
    files: list[Path] = []
    retrieved = skipped = 0
    for study in uids:
        try:
            for ds in client.iter_study(study):
                if "PixelData" not in ds and "FloatPixelData" not in ds:
                    skipped += 1
                    continue
                path = (
                    folder
                    / study
                    / _safe(ds.get("SeriesInstanceUID"), "unknown-series")
                    / f"{_safe(ds.get('SOPInstanceUID'), f'instance-{retrieved}')}.dcm"
                )
                if not path.exists():
                    buffer = io.BytesIO()
                    dcmwrite(buffer, ds, enforce_file_format=True)
                    with atomic_write(path, "wb") as fh:
                        fh.write(buffer.getvalue())
                    retrieved += 1
                files.append(path)
        except Exception as err:  # a study that cannot be fetched is named, never half-scored
            raise SiteFusionError(
                f"{url}: WADO-RS retrieval of study {study} failed: {type(err).__name__}"
            ) from err
    return uids, files, retrieved, skipped


def score_dicomweb(
    run_dir: Path,
    url: str,
    out: Path,
    *,
    studies: Sequence[str] = (),
    qido: dict[str, str] | None = None,
    credentials: dict[str, str] | None = None,
    store_results: bool = False,
    **score_options: Any,
) -> DicomwebSummary:
    """Retrieve studies from ``url``, score them into ``out`` as ``sitefusion score`` does and,
    with ``store_results``, STOW-RS every SR not stored before.

    ``score_options`` go to :func:`sitefusion.scoring.score_inputs` (site, explain,
    sr_patient, console...).

    Raises:
        SiteFusionError: no study named or found, a failed search, retrieval or store.
    """
    if not studies and not qido:
        raise SiteFusionError("--dicomweb: name studies with --study UID or find them with --qido")
    url = url.rstrip("/")
    dest = ensure_writable_folder(out)
    uids, files, retrieved, skipped = retrieve_studies(
        url, dest / "dicomweb", studies=studies, qido=qido, credentials=credentials
    )
    if not uids:
        raise SiteFusionError(f"{url}: no study matches --qido {qido}")
    summary = score_inputs(run_dir, files, dest, **score_options)
    stored = 0
    if store_results:
        target = StowDestination(url, dict(credentials or {}))
        ledger = SentLedger(dest / "node.json")
        sr_folder = dest / "sr"
        for path in sorted(sr_folder.glob("*.dcm")) if sr_folder.is_dir() else []:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            if ledger.sent_uid(path.name) == uid:
                continue
            try:
                target.send(path)
            except SendError as err:
                raise SiteFusionError(f"{err}; rerun the same command to store the rest") from err
            ledger.record(path.name, uid, url)
            stored += 1
    return DicomwebSummary(tuple(uids), retrieved, len(files) - retrieved, skipped, summary, stored)
