"""The DICOM SRs of a scoring batch: one per DICOM series with at least one scored item.

Each SR references the series' scored instances and states, per item, the prediction, the
class probabilities, the expert weights and the OOD flag (built by :mod:`.sr`). Its UIDs are
derived from the run, the series, every member's score key and the patient-module choice, and
its time is the run's completion (never the clock), so the same scores give the same document
and an SR already on disk with that instance UID is left as it is. An SR that cannot be built
is reported, never allowed to lose the scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import generate_uid

from sitefusion.errors import SiteFusionError
from sitefusion.io.deflated import is_deflated
from sitefusion.io.dicom import read_dicom_dataset
from sitefusion.methods import LoadedRun
from sitefusion.rundir.environment import package_version
from sitefusion.scoring.discovery import ScoreItem
from sitefusion.scoring.redaction import Redactor
from sitefusion.scoring.sr import (
    PatientModule,
    SrFinding,
    build_series_sr,
    evidence_header,
    instance_reference,
    sr_uids,
    write_series_sr,
)

__all__ = ["SeriesReports"]


def _document_time(completed_at: str | None, study: Any) -> datetime:
    """The time an SR states it was made: when the run was finished; for a run from before that
    was recorded, the source study's date and time (else the epoch). Never the clock, so that
    the same scores give the same document."""
    if completed_at:
        try:
            return datetime.strptime(completed_at, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
    date, clock = str(study.get("StudyDate", "")), str(study.get("StudyTime", ""))[:6]
    for text, pattern in ((date + clock, "%Y%m%d%H%M%S"), (date, "%Y%m%d")):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return datetime(1970, 1, 1)


@dataclass(frozen=True)
class SeriesReports:
    """Writes a batch's SRs into ``out/sr/`` for ``method`` of ``run``; ``sr_patient`` is the
    patient-module choice (:data:`~sitefusion.scoring.sr.PatientModule`)."""

    run: LoadedRun
    method: str
    out: Path
    sr_patient: PatientModule = "source"

    def write_reports(
        self, items: Sequence[ScoreItem], rows: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, str], list[str]]:
        """One SR per DICOM series with at least one ``ok`` row among ``items``.

        Returns ``{series_uid: relative SR path}`` and the (redacted) reasons of failures.
        """
        by_series: dict[str, list[ScoreItem]] = {}
        for it in items:
            row = rows.get(it.item_id)
            if (
                it.kind.startswith("dicom")
                and row is not None
                and row.get("status") == "ok"
                and row.get("series_uid")
            ):
                by_series.setdefault(str(row["series_uid"]), []).append(it)
        written: dict[str, str] = {}
        failures: list[str] = []
        for series_uid, members in sorted(by_series.items()):
            rel = f"sr/{re.sub(r'[^0-9A-Za-z.]', '_', series_uid)}.dcm"
            try:
                self._write_report(self.out / rel, series_uid, members, rows)
            except Exception as err:  # an SR problem never loses the scores
                redact = Redactor(frozenset().union(*(m.identifiers for m in members)))
                # an OSError (a full disk) is worded by its cause, with the file it was for;
                # the rerun writes it (an SR is rebuilt whenever its file is missing)
                why = (
                    err.strerror
                    if isinstance(err, OSError) and err.strerror
                    else f"{type(err).__name__}: {err}"
                )
                failures.append(
                    redact(f"series {series_uid}: SR not written: {why} ({self.out / rel})")
                )
                continue
            written[series_uid] = rel
        return written, failures

    def _write_report(
        self,
        path: Path,
        series_uid: str,
        members: list[ScoreItem],
        rows: dict[str, dict[str, Any]],
    ) -> None:
        run = self.run
        members = sorted(members, key=lambda it: it.sort_key)
        # The patient-module choice is part of the document: another choice, another instance.
        sr_series, sr_instance = sr_uids(
            run.run_id,
            series_uid,
            [str(rows[m.item_id]["score_key"]) for m in members] + [f"patient:{self.sr_patient}"],
        )
        # sitefusion never writes a deflated SR: one found there is rewritten, not inflated
        if path.exists() and not is_deflated(path):
            try:
                existing = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                if str(existing.get("SOPInstanceUID", "")) == sr_instance:
                    return  # same scores, same document
            except Exception:  # unreadable: rewritten below
                pass
        # One header read per series: the study and (blank) patient attributes are shared, each
        # instance only adds its UIDs (known from discovery).
        template = evidence_header(
            read_dicom_dataset(members[0].files[0], stop_before_pixels=True), self.sr_patient
        )
        findings = []
        for m in members:
            row = rows[m.item_id]
            classes = dict(m.sop_classes)
            order = [str(s) for s in row.get("sop_uids") or m.sop_uids]
            sources = tuple(
                instance_reference(template, series_uid, s, classes[s])
                for s in order
                if s in classes
            )
            if not sources:
                raise SiteFusionError(f"{m.input}: no SOP Class/Instance UID to reference")
            findings.append(
                SrFinding(
                    sources=sources,
                    prediction=run.classes.index(row["prediction"]),
                    probabilities=tuple(float(row[f"prob_{c}"]) for c in run.classes),
                    weights=tuple(float(row[f"weight_{s}"]) for s in run.expert_sites),
                    ood_score=float(row["ood_score"]),
                    ood_flag=bool(row["ood_flag"]),
                    tracking_uid=str(generate_uid(entropy_srcs=[run.run_id, m.item_id])),
                    label=f"sitefusion item {m.item_id}",
                )
            )
        version = package_version("sitefusion") or "unknown"
        sr = build_series_sr(
            findings,
            classes=run.classes,
            sites=run.expert_sites,
            run_id=run.run_id,
            method=self.method,
            version=version,
            series_uid=sr_series,
            sop_uid=sr_instance,
            created=_document_time(run.completed_at, template),
            patient=self.sr_patient,
        )
        write_series_sr(path, sr)
