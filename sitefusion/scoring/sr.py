"""A DICOM Structured Report per scored series (highdicom, TID 1500 Measurement Report).

One Comprehensive 3D SR per source series, filed into the source study. Each scored item (an
instance of a 2D run, or the whole series of a 3D run) is one measurement group (TID 1501) that
references its source instances by UID and holds:

* the predicted class as a qualitative evaluation (``99SITEFUSION`` "Predicted class" = the class),
* one probability per class and one fusion weight per expert as numeric measurements
  (unit UCUM ``1``), and the out-of-distribution distance,
* the out-of-distribution flag as a qualitative evaluation (SCT Yes/No),
* the algorithm (``sitefusion`` version, run id, method) as TID 4019 algorithm identification.

Class names and expert weights have no standard codes; they use the private coding scheme
``99SITEFUSION`` declared in the Coding Scheme Identification Sequence.

Patient module (``patient``): an SR goes back to the archive its images came from, and a PACS
files an SR by patient and study; one with an empty Patient ID in a study whose other objects
carry one may be rejected or quarantined. By default (``"source"``) the SR therefore carries the
source's PatientName, PatientID and PatientBirthDate. For an SR that leaves the hospital
(``"blank"``, ``score --sr-patient blank``) they are written empty (type 2, empty allowed) and a
study ID or accession number that repeats them is left empty too. Either way the evidence
datasets passed to highdicom are allow-listed copies of the source headers, so nothing else of
the patient is copied, and the CSV, JSONL, file names and logs never carry patient identifiers.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sitefusion.rundir import atomic_write
from sitefusion.scoring.outputs import publish
from sitefusion.scoring.redaction import Redactor, patient_identifiers

__all__ = [
    "CODING_SCHEME",
    "PatientModule",
    "SrFinding",
    "build_series_sr",
    "evidence_header",
    "instance_reference",
    "sr_uids",
    "write_series_sr",
]

CODING_SCHEME = "99SITEFUSION"
"""Private coding scheme designator of the class, probability and expert-weight codes."""

_SR_SERIES_NUMBER = 9901
# Copied from a source header into the evidence given to highdicom (everything else is left
# out, patient identifiers above all).
_EVIDENCE_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "PatientSex",
)
_BLANK_PATIENT = ("PatientName", "PatientID", "PatientBirthDate")

#: Whether an SR carries the source's patient module or a blank one.
PatientModule = Literal["source", "blank"]
_FREE_TEXT = ("AccessionNumber", "StudyID")


@dataclass(frozen=True)
class SrFinding:
    """One scored item of the series: its source instances and its scores.

    ``sources`` are evidence headers (:func:`evidence_header`) of the item's instances;
    ``probabilities`` ``[K]`` and ``weights`` ``[E]`` follow the run's class and expert order.
    """

    sources: tuple[Any, ...]
    prediction: int
    probabilities: tuple[float, ...]
    weights: tuple[float, ...]
    ood_score: float
    ood_flag: bool
    tracking_uid: str
    label: str


def evidence_header(ds: Any, patient: PatientModule = "blank") -> Any:
    """An allow-listed copy of a source header: UIDs, study and accession, and the patient
    module as ``patient`` says (see the module docstring).

    With ``"blank"`` a study ID or accession number containing the patient's name or ID is left
    empty too.
    """
    from pydicom import Dataset

    out = Dataset()
    redact = Redactor.from_values(patient_identifiers(ds))
    for keyword in _EVIDENCE_KEYWORDS:
        if keyword in ds:
            value = ds.get(keyword)
            # A study ID or accession number that repeats a patient identifier is left empty.
            if patient == "blank" and keyword in _FREE_TEXT and redact(str(value)) != str(value):
                value = ""
            setattr(out, keyword, value)
    for keyword in _BLANK_PATIENT:
        setattr(out, keyword, ds.get(keyword, "") if patient == "source" else "")
    if "PatientSex" not in out:
        out.PatientSex = ""
    for keyword in ("AccessionNumber", "StudyID", "StudyDate", "StudyTime"):
        if keyword not in out:
            setattr(out, keyword, "")
    return out


def instance_reference(template: Any, series_uid: str, sop_uid: str, sop_class_uid: str) -> Any:
    """Evidence for one more instance of a study: ``template``'s study and (blank) patient
    attributes with this instance's UIDs, so a series needs one header read, not one per file."""
    out = copy.deepcopy(template)
    out.SeriesInstanceUID = series_uid
    out.SOPInstanceUID = sop_uid
    out.SOPClassUID = sop_class_uid
    return out


def sr_uids(run_id: str, series_uid: str, content: Sequence[str]) -> tuple[str, str]:
    """Deterministic (series, instance) UIDs of the SR: the same scores give the same UIDs, any
    change in the scored content gives new ones (a changed document is a new instance)."""
    from pydicom.uid import generate_uid

    series = generate_uid(entropy_srcs=["sitefusion-sr-series", run_id, series_uid])
    instance = generate_uid(
        entropy_srcs=["sitefusion-sr-instance", run_id, series_uid, *sorted(content)]
    )
    return str(series), str(instance)


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    # Code Meaning is an LO: at most 64 characters, and a backslash would split the value.
    text = meaning.replace("\\", "/")[:64]
    return CodedConcept(value=value, scheme_designator=CODING_SCHEME, meaning=text)


def build_series_sr(
    findings: Sequence[SrFinding],
    *,
    classes: Sequence[str],
    sites: Sequence[str],
    run_id: str,
    method: str,
    version: str,
    series_uid: str,
    sop_uid: str,
    created: datetime,
    patient: PatientModule = "blank",
) -> Any:
    """Build the SR (a ``highdicom.sr.Comprehensive3DSR``) for one source series.

    ``created`` stands for every date and time of the document (instance creation, content,
    contribution), which highdicom would take from the clock: the same scores of the same run
    must give the same bytes under the same SOP Instance UID, however often a batch is
    interrupted and resumed.
    """
    import highdicom as hd
    from highdicom.sr import (
        AlgorithmIdentification,
        CodedConcept,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    unit = CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    yes = CodedConcept(value="373066001", scheme_designator="SCT", meaning="Yes")
    no = CodedConcept(value="373067005", scheme_designator="SCT", meaning="No")
    algorithm = AlgorithmIdentification(
        name="sitefusion", version=version, parameters=[f"run {run_id}", f"method {method}"]
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID.from_uuid(_uuid(run_id)), name="sitefusion", model_name=f"run {run_id}"
    )
    context = ObservationContext(
        observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    groups = []
    for finding in findings:
        measurements = [
            Measurement(
                name=_code(f"PROB{k}", f"Probability of {name}"),
                value=float(finding.probabilities[k]),
                unit=unit,
            )
            for k, name in enumerate(classes)
        ]
        measurements += [
            Measurement(
                name=_code(f"WEIGHT{j}", f"Expert weight {site}"),
                value=float(finding.weights[j]),
                unit=unit,
            )
            for j, site in enumerate(sites)
        ]
        measurements.append(
            Measurement(
                name=_code("OODSCORE", "Out-of-distribution distance"),
                value=float(finding.ood_score),
                unit=unit,
            )
        )
        evaluations = [
            QualitativeEvaluation(
                name=_code("PREDICTION", "Predicted class"),
                value=_code(f"CLASS{finding.prediction}", classes[finding.prediction]),
            ),
            QualitativeEvaluation(
                name=_code("OODFLAG", "Out of distribution"),
                value=yes if finding.ood_flag else no,
            ),
        ]
        groups.append(
            MeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(
                    uid=finding.tracking_uid, identifier=finding.label[:64]
                ),
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations,
                source_images=[
                    SourceImageForMeasurementGroup(
                        referenced_sop_class_uid=str(ds.SOPClassUID),
                        referenced_sop_instance_uid=str(ds.SOPInstanceUID),
                    )
                    for ds in finding.sources
                ],
            )
        )
    report = MeasurementReport(
        observation_context=context,
        procedure_reported=CodedConcept(
            value="363679005", scheme_designator="SCT", meaning="Imaging procedure"
        ),
        imaging_measurements=groups,
    )
    evidence = [ds for f in findings for ds in f.sources]
    scheme = hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=CODING_SCHEME,
        name="sitefusion class, probability and expert-weight codes",
        responsible_organization="sitefusion",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=series_uid,
            series_number=_SR_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="sitefusion",
            manufacturer_model_name="sitefusion",
            software_versions=version,
            device_serial_number=run_id or "unknown",
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description="sitefusion scores (preliminary, unverified)",
            coding_schemes=[scheme],
        )
    if patient == "blank":
        for keyword in _BLANK_PATIENT:
            setattr(sr, keyword, "")
    date, time_ = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    for keyword, value in (
        ("InstanceCreationDate", date),
        ("InstanceCreationTime", time_),
        ("ContentDate", date),
        ("ContentTime", time_),
    ):
        setattr(sr, keyword, value)
    for item in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time_
    return sr


def _uuid(run_id: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sitefusion-run:{run_id}"))


def write_series_sr(path: Path, sr: Any) -> Path:
    """Write the SR atomically as a DICOM Part 10 file."""
    with atomic_write(path, "wb") as fh:
        sr.save_as(fh, enforce_file_format=True)
    return publish(path)
